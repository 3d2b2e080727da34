"""Generate recipes with a loaded model: the decoding presets, and one generation path (chef-genius'
engine or Transformers' ``generate``) for validation samples, `generate`, `evaluate` and serving.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

import torch

from chef_genius.errors import UserError
from chef_genius.families import ModelFamily

# Every setting a preset can use, at Transformers' neutral values: a model's own
# generation_config (a summarization BART's beams and 3-gram ban) never leaks into a preset.
NEUTRAL = {"do_sample": False, "num_beams": 1, "no_repeat_ngram_size": 0, "repetition_penalty": 1.0, "top_k": 50,
           "top_p": 1.0, "temperature": 1.0}
DECODING = {
    "greedy": {"do_sample": False, "num_beams": 1},
    "beam": {"do_sample": False, "num_beams": 4},
    "sample": {"do_sample": True, "top_p": 0.95, "temperature": 0.8},
    # Greedy that cannot loop exactly: no 8-token run twice (a repeated ingredient line or step is one).
    "guarded": {"do_sample": False, "num_beams": 1, "no_repeat_ngram_size": 8},
    # Sampling that cannot loop: cooler sampling, no 10-token run twice.
    "careful": {"do_sample": True, "temperature": 0.7, "top_p": 0.9, "no_repeat_ngram_size": 10},
    # Chef Transformer's decoding (t5-base on RecipeNLG): top-k 60, top-p 0.95, no repeated 3-grams.
    "chef": {"do_sample": True, "top_k": 60, "top_p": 0.95, "no_repeat_ngram_size": 3},
}

# Who writes the recipes: Transformers' `generate`, or chef-genius' own engine (`chef_genius.generation`).
ENGINES = ("transformers", "chef-genius")


@dataclass(frozen=True)
class Generation:
    text: str
    stopped: bool  # ended with an end token, not cut by the token limit
    tokens: int


def generate(model: torch.nn.Module, tokenizer, prompts: list[str], family: ModelFamily, decoding: str = "greedy",
             max_new_tokens: int = 512, num_return_sequences: int = 1, batch_size: int = 16, seed: int = 0,
             max_source_tokens: int = 512, grounded: float = 0.0, engine: str = "chef-genius") -> list[list[str]]:
    """Recipe texts for each prompt (``num_return_sequences`` each); see `generate_details`."""
    details = generate_details(model, tokenizer, prompts, family, decoding, max_new_tokens, num_return_sequences,
                               batch_size, seed, max_source_tokens, grounded, engine=engine)
    return [[g.text for g in row] for row in details]


@torch.no_grad()
def generate_details(model: torch.nn.Module, tokenizer, prompts: list[str], family: ModelFamily,
                     decoding: str = "greedy", max_new_tokens: int = 512, num_return_sequences: int = 1,
                     batch_size: int = 16, seed: int = 0, max_source_tokens: int = 512, grounded: float = 0.0,
                     engine: str = "chef-genius") -> list[list[Generation]]:
    """Recipes for each prompt (``num_return_sequences`` each): text, whether it stopped at an end
    token, and its length. ``grounded`` > 0 pushes the logits of foods the recipe's own ingredient
    list lacks down by that much while the steps are written (`chef_genius.grounding`).

    Prompts are encoded exactly as in training, by the model's ``family`` (`chef_genius.families`),
    which also pads them and cuts them from the output; generation stops at the end of turn or EOS.
    Sampling is seeded, and the caller's RNG states (CPU and CUDA) are restored afterwards, so
    generating during training never changes training. Compiled blocks run eagerly here: the
    growing KV cache would recompile them at every step.

    ``batch_size`` counts rows decoded at once, a prompt's return sequences each a row, with either
    engine (Transformers gets ``batch_size // num_return_sequences`` prompts a batch).

    ``engine`` "chef-genius" decodes with `chef_genius.generation` (a cache allocated once,
    length-sorted continuous batches, CUDA graphs on a GPU): greedy and guarded give the same
    recipes as "transformers" (Transformers' ``generate``), sampled presets recipes from the same
    distribution. Beam search, ``grounded`` > 0 and models it was not proven on (`unsupported`)
    use Transformers.
    Where a causal model's positions end, the engine stops each row at its own prompt's limit
    (Transformers: every row of a batch at its longest prompt's).
    """
    if decoding not in DECODING:
        raise UserError(f"unknown decoding '{decoding}' (choose from {', '.join(DECODING)})")
    if engine not in ENGINES:
        raise UserError(f"unknown generation engine '{engine}' (choose from {', '.join(ENGINES)})")
    with torch.compiler.set_stance("force_eager"):
        if engine == "chef-genius" and grounded <= 0 and _engine_runs(model, family, decoding, num_return_sequences):
            return _generate_with_engine(model, tokenizer, prompts, family, decoding, max_new_tokens,
                                         num_return_sequences, batch_size, seed, max_source_tokens)
        return _generate(model, tokenizer, prompts, family, decoding, max_new_tokens, num_return_sequences,
                         batch_size, seed, max_source_tokens, grounded)


def _settings(decoding: str, num_return_sequences: int) -> dict:
    settings = {**NEUTRAL, **DECODING[decoding]}
    if num_return_sequences > 1 and not settings["do_sample"]:
        settings["num_beams"] = max(settings["num_beams"], num_return_sequences)
    return settings


def _engine_runs(model, family: ModelFamily, decoding: str, num_return_sequences: int) -> bool:
    """Whether `chef_genius.generation` decodes this (else Transformers does, and says why on stderr
    when the model is the reason)."""
    from chef_genius.generation import unsupported

    reason = unsupported(model, family, _settings(decoding, num_return_sequences))
    if reason is not None and ("model type" in reason or "GPU" in reason):
        print(f"chef-genius: {reason}: generating with transformers", file=sys.stderr)
    return reason is None


def _generate_with_engine(model, tokenizer, prompts, family, decoding, max_new_tokens, num_return_sequences,
                          batch_size, seed, max_source_tokens) -> list[list[Generation]]:
    from chef_genius.generation import generate_ids

    device = next(model.parameters()).device
    stops, pad_id = family.stop_ids(tokenizer), tokenizer.pad_token_id
    sources = family.encode_sources(tokenizer, prompts, max_source_tokens)
    if not sources:
        return []
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        decoded = generate_ids(model, sources, family, _settings(decoding, num_return_sequences), stops, pad_id,
                               max_new_tokens, batch_size, num_return_sequences)
    texts = tokenizer.batch_decode([ids for ids, _ in decoded], skip_special_tokens=True,
                                   clean_up_tokenization_spaces=False)
    rows = [Generation(text, stopped, len(ids) - 1 if stopped else sum(1 for t in ids if t != pad_id))
            for text, (ids, stopped) in zip(texts, decoded, strict=True)]
    return [rows[i:i + num_return_sequences] for i in range(0, len(rows), num_return_sequences)]


def _generate(model, tokenizer, prompts, family: ModelFamily, decoding, max_new_tokens, num_return_sequences,
              batch_size, seed, max_source_tokens, grounded) -> list[list[Generation]]:
    device = next(model.parameters()).device
    stops = family.stop_ids(tokenizer)
    settings = _settings(decoding, num_return_sequences)
    pad_id = tokenizer.pad_token_id
    outputs: list[list[Generation]] = []
    batch_size = max(1, batch_size // num_return_sequences)  # prompts a batch: rows = prompts x returns
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        for start in range(0, len(prompts), batch_size):
            sources = family.encode_sources(tokenizer, prompts[start:start + batch_size], max_source_tokens)
            input_ids, attention_mask = family.pad_prompts(sources, pad_id)
            new_tokens = family.new_token_budget(model, input_ids.shape[1], max_new_tokens)
            extra = {}
            if grounded > 0:
                from transformers import LogitsProcessorList

                from chef_genius.grounding import GroundedFoods

                extra["logits_processor"] = LogitsProcessorList([GroundedFoods(
                    tokenizer, family.output_offset(input_ids.shape[1]), prompts[start:start + batch_size], grounded)])
            generated = model.generate(input_ids=input_ids.to(device), attention_mask=attention_mask.to(device),
                                       max_new_tokens=new_tokens, pad_token_id=pad_id,
                                       eos_token_id=stops if len(stops) > 1 else stops[0],
                                       num_return_sequences=num_return_sequences, **settings, **extra)
            generated = family.new_tokens(generated, input_ids.shape[1])
            texts = tokenizer.batch_decode(generated, skip_special_tokens=True, clean_up_tokenization_spaces=False)
            rows = generated.tolist()
            done = [_stopped(row, stops, pad_id) for row in rows]
            for i in range(len(sources)):
                span = range(i * num_return_sequences, (i + 1) * num_return_sequences)
                outputs.append([Generation(texts[j], done[j][0], done[j][1]) for j in span])
    return outputs


def _stopped(row: list[int], stops: list[int], pad_id: int) -> tuple[bool, int]:
    """(ended with a stop token, tokens before it). Padding only follows a finished sequence."""
    for position, token in enumerate(row):
        if token in stops:
            return True, position
    return False, sum(1 for t in row if t != pad_id)
