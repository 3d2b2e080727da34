"""Decoding an encoder-decoder model (T5, FLAN-T5) batch by batch.

The encoder runs once a batch; the decoder's self-attention keys and values live in a Transformers
`StaticCache` allocated once for the batch (every row is at the same decoder position), the
cross-attention's are computed at the first step and reused. Masks are passed ready-made (4D,
additive), so no step asks the host anything; on CUDA the steps after the first are captured as a
CUDA graph and replayed. A batch takes no newcomers: its encoder output is shared by its rows.
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import torch

from chef_genius.generation.causal import capture, model_dtype
from chef_genius.generation.rules import DecodingRule, next_tokens
from chef_genius.generation.state import RowState, additive_mask, base_model, cache_keyword

WARMUPS = 2  # real steps run before a CUDA graph is recorded


def _decoder_config(model: torch.nn.Module):
    """The config a decoder cache is sized from: as many layers as the decoder has."""
    config = copy.deepcopy(model.config)
    layers = getattr(config, "num_decoder_layers", None)
    if layers:
        config.num_layers = layers
    return config


class Seq2SeqDecoder:
    """Decode prompts in batches of ``slots`` rows.

    Args:
        model: an encoder-decoder LM (``get_encoder()``, ``decoder_start_token_id``).
        rule, stops, pad_id, max_new_tokens, check_every, graphs, race: as `causal.CausalDecoder`.
        slots: rows decoded at once.
    """

    def __init__(self, model: torch.nn.Module, rule: DecodingRule, stops: list[int], pad_id: int,
                 max_new_tokens: int, slots: int, check_every: int = 1, graphs: bool = False, race: bool | None = None):
        self.model, self.rule, self.pad_id, self.slots = model, rule, pad_id, slots
        self.max_new_tokens, self.check_every = max_new_tokens, max(1, check_every)
        self.device = next(model.parameters()).device
        self.dtype = model_dtype(model)
        self.graphs = graphs and self.device.type == "cuda"
        self.race = self.graphs if race is None else race
        self.stops = stops
        config = base_model(model).config
        self.start_id = config.decoder_start_token_id
        self.cache_config = _decoder_config(base_model(model))

    def run(self, prompts: list[list[int]],
            on_done: Callable[[int], None] | None = None) -> list[tuple[list[int], bool]]:
        """(generated ids, ended at a stop token) for each prompt, in order; ``on_done(i)`` as
        prompt i's batch ends."""
        results: list[tuple[list[int], bool]] = []
        for first in range(0, len(prompts), self.slots):
            results.extend(self._batch(prompts[first:first + self.slots]))
            for index in range(first, len(results)):
                if on_done is not None:
                    on_done(index)
        return results

    def _batch(self, prompts: list[list[int]]) -> list[tuple[list[int], bool]]:
        from transformers import DynamicCache, EncoderDecoderCache, StaticCache

        rows, width = len(prompts), max(len(p) for p in prompts)
        ids = torch.full((rows, width), self.pad_id, dtype=torch.long)
        real = torch.zeros((rows, width), dtype=torch.bool)
        for i, prompt in enumerate(prompts):  # right-padded, as Transformers pads a seq2seq batch
            ids[i, :len(prompt)] = torch.tensor(prompt, dtype=torch.long)
            real[i, :len(prompt)] = True
        ids, real = ids.to(self.device), real.to(self.device)
        encoded = self.model.get_encoder()(input_ids=ids, attention_mask=real.long())
        cross = additive_mask(real[:, None, None, :], self.dtype)
        length = self.max_new_tokens + 1
        cache = EncoderDecoderCache(StaticCache(config=self.cache_config, max_cache_len=length),
                                    DynamicCache(config=self.cache_config))
        state = RowState(rows, length, self.max_new_tokens, self.stops, self.pad_id, self.device)
        everyone = torch.arange(rows, device=self.device)
        start = torch.full((rows, 1), self.start_id, dtype=torch.long, device=self.device)
        state.begin(everyone, start, torch.zeros(rows, dtype=torch.long, device=self.device))
        state.last.fill_(self.start_id)
        step_index = torch.zeros((), dtype=torch.long, device=self.device)  # every row's decoder position
        columns = torch.arange(length, device=self.device)
        keyword = cache_keyword(self.model)

        def step() -> None:
            allowed = (columns <= step_index).expand(rows, length)[:, None, None, :]
            out = self.model(encoder_outputs=encoded, attention_mask=cross, decoder_input_ids=state.last[:, None],
                             decoder_attention_mask=additive_mask(allowed, self.dtype), use_cache=True,
                             **{keyword: cache})
            state.commit(next_tokens(out.logits[:, -1], state.history, state.column, self.rule, race=self.race))
            step_index.add_(1)

        step()  # the first step fills the cross-attention cache: never captured
        steps, replay = 1, step
        if self.graphs and self.max_new_tokens > 1 + WARMUPS:
            replay = capture(step, WARMUPS)
            steps += WARMUPS
        while steps < self.max_new_tokens:
            if steps % self.check_every == 0 and bool(state.finished.all()):
                break
            replay()
            steps += 1
        return [state.result(r) for r in range(rows)]
