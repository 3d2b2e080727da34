"""What the generation-engine tests share: the tiny Llama's texts and prompts, a model copy that
listens to its prompt, and rows written by `transformers.generate` and by the engine."""

from __future__ import annotations

import copy

import torch

from chef_genius.encoding import end_of_turn_id
from chef_genius.families import CAUSAL
from chef_genius.generation import EngineOptions, generate_ids
from chef_genius.inference import DECODING, NEUTRAL

TEXTS = ["Title: Soup || Ingredients: 1 cup water | 2 carrots || Steps: Boil the water. | Add the carrots.",
         "Create a recipe: tomato soup with basil, onion and garlic"] * 40
PROMPTS = ["soup", "tomato soup with basil, onion and garlic, slowly", "carrots", "water, onion and a little garlic",
           "basil", "a soup of carrots and water for two"]
EXACT = EngineOptions(exact=True)


def sharpened(model, tokenizer, scale: float = 30.0, stop_bias: float = 4.0):
    """A copy that listens to its prompt (RMS norms at 1, as trained models have them, not the
    file's random 0.02), whose head is confident (times ``scale``: it loops under greedy) and likes
    the end of turn by ``stop_bias`` (rows end at varied lengths)."""
    model = copy.deepcopy(model)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "norm" in name:
                param.fill_(1.0)
    head = model.lm_head
    biased = torch.nn.Linear(head.in_features, head.out_features, bias=True)
    with torch.no_grad():
        biased.weight.copy_(head.weight * scale)
        biased.bias.zero_()
        biased.bias[end_of_turn_id(tokenizer)] = stop_bias
    model.lm_head = biased
    return model.eval()


def transformers_rows(model, sources, pad_id, stops, settings, max_new, family, seed=0) -> list[list[int]]:
    """`transformers.generate` on one padded batch: each row's new tokens up to and with its stop."""
    ids, mask = family.pad_prompts(sources, pad_id)
    device = next(model.parameters()).device
    ids, mask = ids.to(device), mask.to(device)
    torch.manual_seed(seed)
    with torch.no_grad():
        out = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=max_new, pad_token_id=pad_id,
                             eos_token_id=stops, **settings)
    out = family.new_tokens(out, ids.shape[1])
    rows = []
    for row in out.tolist():
        ends = [i for i, t in enumerate(row) if t in stops]
        rows.append(row[:ends[0] + 1] if ends else row)
    return rows


def engine_rows(model, sources, pad_id, stops, settings, max_new, family, batch, options=EXACT, seed=0):
    torch.manual_seed(seed)
    with torch.no_grad():
        return generate_ids(model, sources, family, settings, stops, pad_id, max_new, batch, options=options)


def graph_rows_match_transformers(model, sources, preset, family, batches) -> None:
    """The engine's CUDA-graph steps (30 new tokens, end token 1, pad 0) give Transformers' rows for
    ``preset``, at each batch size of ``batches``."""
    settings = {**NEUTRAL, **DECODING[preset]}
    expected = transformers_rows(model, sources, 0, [1], settings, 30, family)
    for batch in batches:
        got = engine_rows(model, sources, 0, [1], settings, 30, family, batch=batch,
                          options=EngineOptions(check_every=4, graphs=True))
        assert [ids for ids, _ in got] == expected


def causal_case(llama, preset):
    model, tokenizer = llama
    model = sharpened(model, tokenizer)
    sources = CAUSAL.encode_sources(tokenizer, PROMPTS, 64)
    assert len({len(s) for s in sources}) >= 4  # varied prompt lengths: real left padding
    return model, sources, tokenizer.pad_token_id, CAUSAL.stop_ids(tokenizer), {**NEUTRAL, **DECODING[preset]}
