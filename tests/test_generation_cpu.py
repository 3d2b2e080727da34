"""The engine's CPU path (`EngineOptions.cpu_fast`): the lean Llama decode step, column-major
weights, attention over the written columns only. Same greedy tokens as Transformers and as the
plain path; the model is left as it was. Tiny models built from a config, offline."""

from __future__ import annotations

import pytest
import torch

from chef_genius.families import CAUSAL
from chef_genius.generation import EngineOptions, generate_ids
from chef_genius.generation.layout import column_major_linears
from chef_genius.generation.llama_step import LlamaDecodeStep
from chef_genius.generation.state import RowCache, additive_mask

VOCAB, STOP, PAD = 97, 47, 0  # tiny_llama(): the third prompt's row stops at its 3rd token, others run on


def tiny_llama(seed: int = 0, bias: bool = False, tied: bool = False):
    """A random 2-layer Llama with grouped heads (4 over 2), ``tied`` embeddings and, with ``bias``,
    biased attention projections; large embeddings and a confident head: greedy rows depend on
    their prompt and loop."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=VOCAB, hidden_size=32, intermediate_size=80, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                         tie_word_embeddings=tied, attention_bias=bias, pad_token_id=PAD)
    model = LlamaForCausalLM(config).eval()
    with torch.no_grad():
        model.model.embed_tokens.weight.mul_(20.0)
        if not tied:
            model.lm_head.weight.mul_(4.0)
    return model


PROMPTS = [[5, 9, 11, 40, 2, 7], [8, 1], [33, 34, 35, 36, 37, 38, 39, 41, 50], [60], [70, 71, 72]]


def transformers_greedy(model, prompt: list[int], max_new: int, stop: int = STOP) -> list[int]:
    ids = torch.tensor([prompt])
    with torch.no_grad():
        out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_new,
                             do_sample=False, pad_token_id=PAD, eos_token_id=[stop])[0, len(prompt):].tolist()
    return out[:out.index(stop) + 1] if stop in out else out


def engine(model, settings, options, batch=2, max_new=30, stop: int = STOP):
    torch.manual_seed(0)
    with torch.no_grad():
        return [ids for ids, _ in generate_ids(model, PROMPTS, CAUSAL, settings, [stop], PAD, max_new, batch,
                                               options=options)]


def test_the_lean_step_supports_plain_llamas_only():
    model = tiny_llama()
    assert LlamaDecodeStep.supports(model) and LlamaDecodeStep.supports(tiny_llama(tied=True))
    assert LlamaDecodeStep.supports(model, "cpu") and not LlamaDecodeStep.supports(model, "cuda")
    assert LlamaDecodeStep.supports(tiny_llama(bias=True))
    from peft import LoraConfig, get_peft_model

    wrapped = get_peft_model(tiny_llama(), LoraConfig(r=2, target_modules=["q_proj", "v_proj"]))
    assert not LlamaDecodeStep.supports(wrapped)
    assert not LlamaDecodeStep.supports(wrapped.get_base_model())  # adapters' layers replace the Linear


@pytest.mark.parametrize("bias", [False, True])
def test_the_lean_step_gives_the_model_logits(bias):
    """A decode step of two left-padded rows over a RowCache: the lean step's logits and cache equal
    the model's forward (with the engine's grouped attention) on the same cache."""
    from chef_genius.generation.attention import grouped_attention_for

    model = tiny_llama(bias=bias)
    step = LlamaDecodeStep(model)
    rows, width, capacity = 2, 5, 8
    ids = torch.tensor([[PAD, PAD, 5, 9, 11], [8, 1, 33, 34, 35]])
    starts = torch.tensor([2, 0])
    columns = torch.arange(width)
    real = columns[None, :] >= starts[:, None]
    positions = (columns[None, :] - starts[:, None]).masked_fill(~real, 1)
    allowed = real[:, None, None, :] & (columns[None, None, None, :] <= columns[None, None, :, None])
    caches = []
    for _ in range(2):
        cache = RowCache(rows, capacity, torch.full((rows,), width + 1))
        cache.prefill_rows = torch.arange(rows)
        with torch.no_grad(), grouped_attention_for(model):
            model(input_ids=ids, attention_mask=additive_mask(allowed, torch.float32), position_ids=positions,
                  past_key_values=cache, use_cache=True)
        cache.prefill_rows = None
        caches.append(cache)
    last = torch.tensor([[40], [36]])
    step_positions = torch.tensor([[width - 2], [width]])
    full = torch.arange(capacity)
    mask = additive_mask(((full[None, :] >= starts[:, None]) & (full[None, :] <= width))[:, None, None, :],
                         torch.float32)
    with torch.no_grad(), grouped_attention_for(model):
        theirs = model(input_ids=last, attention_mask=mask, position_ids=step_positions, past_key_values=caches[0],
                       use_cache=True).logits[:, -1]
        ours = step(last, mask, step_positions, caches[1])
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5)
    for a, b in zip(caches[0].keys + caches[0].values, caches[1].keys + caches[1].values, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(("sizes", "parts"), [([40, 8, 8], 2), ([7], 2), ([12, 4], 4), ([9, 9], 1)])
def test_packed_linears_compute_the_stacked_products(sizes, parts):
    """`_Packed`: stacked layers (with and without biases) in ``parts`` blocks (one when the outputs
    do not divide) give each layer's F.linear, side by side, for any leading shape."""
    from chef_genius.generation.llama_step import _Packed

    torch.manual_seed(0)
    layers = [torch.nn.Linear(6, size, bias=i % 2 == 1) for i, size in enumerate(sizes)]
    packed = _Packed(layers, parts)
    assert packed.parts == (parts if sum(sizes) % parts == 0 else 1)
    x = torch.randn(3, 1, 6)
    torch.testing.assert_close(packed(x), torch.cat([layer(x) for layer in layers], dim=-1))
    torch.testing.assert_close(packed(x[:, 0]), torch.cat([layer(x[:, 0]) for layer in layers], dim=-1))


@pytest.mark.parametrize(("bias", "stop"), [(False, STOP), (True, 19)])  # 19: the biased model's rows 0 and 4
def test_cpu_path_writes_transformers_greedy_recipes(bias, stop, monkeypatch):
    """Each prompt's greedy recipe equals `transformers.generate`'s for it alone, on the lean step
    (counted) in sorted continuous batches; and equals the plain path's (cpu_fast=False)."""
    model = tiny_llama(bias=bias)
    calls = []
    original = LlamaDecodeStep.__call__
    monkeypatch.setattr(LlamaDecodeStep, "__call__", lambda self, *a: calls.append(1) or original(self, *a))
    fast = engine(model, {"do_sample": False}, EngineOptions(check_every=3), stop=stop)
    assert len(calls) >= 20
    assert fast == [transformers_greedy(model, p, 30, stop) for p in PROMPTS]
    assert len({len(r) for r in fast}) >= 2  # rows end at varied steps: refills under way
    calls.clear()
    assert engine(model, {"do_sample": False}, EngineOptions(check_every=3, cpu_fast=False), stop=stop) == fast
    assert not calls
    # fused: the lean step with one block a matrix over the whole cache, as a GPU's graph runs it
    assert engine(model, {"do_sample": False}, EngineOptions(check_every=3, cpu_fast=False, fused=True),
                  stop=stop) == fast
    assert len(calls) >= 20


def test_short_rows_skip_the_weight_copies(monkeypatch):
    """Below CPU_FAST_MIN_TOKENS the lean step is not made (nor the layout changed): the copies
    would cost more than they gain; the recipes are the same."""
    from chef_genius.generation import causal

    model = tiny_llama()
    made = []
    original = LlamaDecodeStep.__init__
    monkeypatch.setattr(LlamaDecodeStep, "__init__", lambda self, *a: made.append(1) or original(self, *a))
    short = causal.CPU_FAST_MIN_TOKENS - 1
    got = engine(model, {"do_sample": False}, EngineOptions(), max_new=short)
    assert not made and model.lm_head.weight.is_contiguous()
    assert got == [transformers_greedy(model, p, short) for p in PROMPTS]
    engine(model, {"do_sample": False}, EngineOptions(), max_new=causal.CPU_FAST_MIN_TOKENS)
    assert made == [1]


def test_cpu_path_bans_ngrams_and_samples_as_the_plain_path():
    """The decoding rules are untouched: a banned greedy preset and a seeded draw (exact path, one
    batch) write the plain path's tokens."""
    model = tiny_llama(seed=1)
    for settings in ({"do_sample": False, "no_repeat_ngram_size": 3},
                     {"do_sample": True, "temperature": 0.7, "top_k": 50, "top_p": 0.9, "no_repeat_ngram_size": 4}):
        fast = engine(model, settings, EngineOptions(exact=True), batch=5)
        assert fast == engine(model, settings, EngineOptions(exact=True, cpu_fast=False), batch=5)


def test_column_major_linears_keeps_values_and_restores_the_model():
    """Inside: the wide Linear weights (out >= in) are column-major with the same values, the
    tied head stays tied, the narrow ones are untouched; after: the original tensors, ordinary
    (not inference) tensors even when entered under inference_mode."""
    model = tiny_llama(tied=True)
    before = {name: (p.data_ptr(), p.detach().clone()) for name, p in model.named_parameters()}
    x = torch.randn(1, 3, 32)
    expected = model.model.layers[0].mlp.gate_proj(x)
    with torch.inference_mode(), column_major_linears(model) as changed:
        gate = model.model.layers[0].mlp.gate_proj.weight
        assert changed == 2 * 4 + 1  # q, o, gate, up of each layer, and the tied head
        assert gate.t().is_contiguous() and not gate.is_contiguous()
        assert model.lm_head.weight is model.model.embed_tokens.weight
        assert model.model.layers[0].mlp.down_proj.weight.is_contiguous()  # narrow (out < in): kept
        torch.testing.assert_close(model.model.layers[0].mlp.gate_proj(x), expected)
    for name, p in model.named_parameters():
        assert p.data_ptr() == before[name][0] and torch.equal(p.detach(), before[name][1])
        assert not p.is_inference()
    with column_major_linears(model, enabled=False) as changed:
        assert changed == 0


def test_cpu_path_without_the_lean_step_uses_column_major_weights(monkeypatch):
    """The model's own attention (grouped=False) has no lean step: its forward runs on column-major
    weights and writes the same greedy recipes."""
    from chef_genius.generation import causal

    model = tiny_llama()
    seen = []
    original = causal.CausalDecoder._forward

    def spy(self, *args):
        seen.append(model.lm_head.weight.is_contiguous())
        return original(self, *args)

    monkeypatch.setattr(causal.CausalDecoder, "_forward", spy)
    got = engine(model, {"do_sample": False}, EngineOptions(grouped=False))
    assert seen and not any(seen)
    assert model.lm_head.weight.is_contiguous()
    assert got == [transformers_greedy(model, p, 30) for p in PROMPTS]


@pytest.mark.parametrize("bias", [False, True])
def test_compiled_layers_write_the_eager_steps_recipes(bias):
    """`EngineOptions.compiled`: the fused step's layers over the whole cache run through one
    ``torch.compile``d function, compiled once a cache size whatever the layer (not once a layer or
    a step), also under a "force_eager" stance (a server's); its greedy recipes are the eager fused
    step's, which are Transformers' (test above)."""
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    counters.clear()
    model = tiny_llama(bias=bias)
    stop = STOP if not bias else 19
    eager = engine(model, {"do_sample": False}, EngineOptions(check_every=3, cpu_fast=False, fused=True), stop=stop)
    assert not counters["stats"]["unique_graphs"]
    with torch.compiler.set_stance("force_eager"):
        compiled = engine(model, {"do_sample": False}, EngineOptions(check_every=3, cpu_fast=False, compiled=True),
                          stop=stop)
    assert compiled == eager
    assert counters["stats"]["unique_graphs"] == 1  # one batch and cache size: one graph for both layers
    assert counters["stats"]["calls_captured"] > 20  # the layer's operations, in it
