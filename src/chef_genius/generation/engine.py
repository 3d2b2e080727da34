"""The generation engine's entry point: token ids in, generated ids out, for a preset.

Prompts are sorted by length (longest first), so that a prefill group pads little and a batch
ends together, and the results are put back in the caller's order. With ``num_return_sequences``
each prompt is repeated that many times in a row, as Transformers expands a batch.

Seeds: the caller seeds the RNG (`chef_genius.inference` does, and restores it). On the eager path
with ``exact=True`` (no sorting, batch after batch, finished rows checked every step) the engine
draws exactly as `transformers.generate` does, so a seed gives the same recipes; otherwise a seed
gives recipes from the same distribution, drawn in another order.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from chef_genius.generation.causal import CausalDecoder
from chef_genius.generation.rules import DecodingRule
from chef_genius.generation.seq2seq import Seq2SeqDecoder
from chef_genius.generation.state import base_model


@dataclass(frozen=True)
class EngineOptions:
    """How the engine batches and syncs.

    Attributes:
        exact: decode batch after batch in the caller's order, checking for finished rows every
            step: Transformers' own batches and draws (the proofs use it). On the CPU it keeps
            ``cpu_fast``'s arithmetic (the same values summed in another order); with
            ``cpu_fast=False`` too, Transformers' own forward.
        check_every: decode steps between reads of finished rows when not ``exact`` (the only
            host syncs of the decode loop).
        graphs: capture decode steps as CUDA graphs (CUDA only; ignored on the CPU).
        race: draw samples by the exponential race (what a CUDA graph replays) instead of
            ``torch.multinomial``; None: exactly when graphs run.
        grouped: a causal model's decode steps attend through `attention.grouped_attention`
            (no copies of grouped keys and values); False: through the model's own attention.
        cpu_fast: on the CPU, a causal model's decode steps attend to the written columns only and
            run through `llama_step.LlamaDecodeStep` (a plain Llama) or on column-major weights
            (`layout`); float32 values, MKL's summation order (docs/generation.md, CPU). It holds
            a second copy of those weights while it decodes: a CPU server, the whole time.
        fused: a plain Llama's decode steps run through `llama_step.LlamaDecodeStep` on any device,
            inside the CUDA graph on a GPU (q/k/v and gate/up as one product each); a second copy
            of the weights. Off here; `serve` turns it on (about 1.2x the tokens/s of the plain step on
            an H100, docs/serve.md).
        compiled: ``fused`` with each layer of a graph's step compiled by ``torch.compile`` (its
            element-wise work fused; one compilation a cache size, seconds to a minute each).
    """

    exact: bool = False
    check_every: int = 8
    graphs: bool = True
    race: bool | None = None
    grouped: bool = True
    cpu_fast: bool = True
    fused: bool = False
    compiled: bool = False


def model_type(model: torch.nn.Module) -> str:
    base = base_model(model)
    return str(getattr(base.config, "model_type", ""))


def position_limit(model: torch.nn.Module) -> int | None:
    """The longest sequence a causal model's position embeddings allow (None when unbounded)."""
    base = base_model(model)
    config = base.config
    return getattr(config, "n_positions", None) or getattr(config, "max_position_embeddings", None)


def unsupported(model: torch.nn.Module, family, settings: dict) -> str | None:
    """Why the engine cannot run this model (of ``family``, a `chef_genius.families.ModelFamily`)
    and preset (None when it can)."""
    kind = model_type(model)
    if kind not in family.engine_types:
        return f"model type '{kind}' is not one the engine was proven on"
    if kind not in family.engine_gpu_types and next(model.parameters()).device.type == "cuda":
        return f"model type '{kind}' is proven on the engine's CPU path, not yet on a GPU"
    base = base_model(model)
    config = base.config
    if getattr(config, "attn_logit_softcapping", None) or getattr(config, "final_logit_softcapping", None) \
            or getattr(config, "use_bidirectional_attention", False):
        return "attention with logit soft-capping or bidirectional windows is not implemented by the engine"
    try:
        DecodingRule.from_settings(settings)
    except ValueError as error:
        return str(error)
    return None


def generate_ids(model: torch.nn.Module, sources: list[list[int]], family, settings: dict,
                 stops: list[int], pad_id: int, max_new_tokens: int, batch_size: int, num_return_sequences: int = 1,
                 options: EngineOptions = EngineOptions(),
                 on_done: Callable[[int], None] | None = None) -> list[tuple[list[int], bool]]:
    """Generated ids (a final stop token included) and whether each ended at a stop token.

    Args:
        model: a model `unsupported` accepts, in eval mode.
        sources: prompt ids (the family's ``encode_sources``).
        family: the model's `chef_genius.families.ModelFamily` (decoder-only or encoder-decoder).
        settings: Transformers' keyword settings of the preset (``NEUTRAL`` then the preset).
        stops: token ids that end a recipe.
        pad_id: the tokenizer's padding id.
        max_new_tokens: the token limit of a recipe; a causal row also stops where the model's
            positions end (`position_limit`), its prompt included.
        batch_size: rows decoded at once.
        num_return_sequences: recipes per prompt, one after another in the result.
        options: batching and syncing (`EngineOptions`).
        on_done: called with a row's index in the result as soon as the row is collected (latency).

    Returns:
        One entry per prompt and return sequence, prompt by prompt.

    Raises:
        ValueError: the preset uses a setting the engine does not implement.
    """
    rule = DecodingRule.from_settings(settings)
    rows = [ids for ids in sources for _ in range(num_return_sequences)]
    if not rows:
        return []
    order = list(range(len(rows))) if options.exact else sorted(range(len(rows)), key=lambda i: -len(rows[i]))
    ordered = [rows[i] for i in order]
    check_every = 1 if options.exact else options.check_every
    slots = min(batch_size, len(rows))
    if family.decodes_in_slots:
        decoder = CausalDecoder(model, rule, stops, pad_id, max_new_tokens, slots, max(len(r) for r in rows),
                                continuous=not options.exact, check_every=check_every, graphs=options.graphs,
                                race=options.race, position_limit=position_limit(model), grouped=options.grouped,
                                cpu_fast=options.cpu_fast, fused=options.fused,
                                compiled=options.compiled)
    else:
        decoder = Seq2SeqDecoder(model, rule, stops, pad_id, max_new_tokens, slots, check_every=check_every,
                                 graphs=options.graphs, race=options.race)
    decoded = decoder.run(ordered, None if on_done is None else (lambda position: on_done(order[position])))
    results: list[tuple[list[int], bool]] = [([], False)] * len(rows)
    for position, index in enumerate(order):
        results[index] = decoded[position]
    return results
