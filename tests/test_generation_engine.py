"""The generation engine (`chef_genius.generation`) writes what `transformers.generate` writes.

Greedy and guarded decoding: token for token, on a tiny Llama (SmolLM2's architecture, from a GGUF
file) with a left-padded batch of varied prompt lengths; with length-sorted,
continuous batching too. Sampled decoding with a seed: the very tokens on the engine's exact path,
and the same token-frequency and length distributions (permutation tests that do reject a changed
temperature) on its fast path with the graph's sampler. The n-gram ban never lets an n-gram
repeat; stop tokens end rows. T5 and Gemma 3: test_generation_t5.py and test_generation_gemma.py; the
decoding rules on hand-made scores: test_generation_rules.py.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from chef_genius.encoding import end_of_turn_id
from chef_genius.families import CAUSAL
from chef_genius.generation import EngineOptions, generate_ids
from chef_genius.inference import DECODING, NEUTRAL, generate_details
from tests.harness.engine_cases import PROMPTS, TEXTS, causal_case, engine_rows, sharpened, transformers_rows
from tests.harness.tiny_causal import write_tiny_gguf

pytest.importorskip("gguf")


@pytest.fixture(scope="module")
def llama(tmp_path_factory):
    """The tiny GGUF Llama and its chat tokenizer."""
    from chef_genius.inference import load_run
    from chef_genius.model.loading import gguf_folder

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("CHEF_GENIUS_CACHE", str(tmp_path_factory.mktemp("cache")))
        loaded = load_run(gguf_folder(write_tiny_gguf(tmp_path_factory.mktemp("gguf") / "tiny.gguf", TEXTS)), "cpu")
    return loaded.model, loaded.tokenizer



@pytest.mark.parametrize("preset", ["greedy", "guarded", "careful", "chef"])
def test_causal_exact_path_is_token_identical_to_transformers(llama, preset):
    model, sources, pad_id, stops, settings = causal_case(llama, preset)
    expected = transformers_rows(model, sources, pad_id, stops, settings, 40, CAUSAL)
    got = engine_rows(model, sources, pad_id, stops, settings, 40, CAUSAL, batch=len(sources))
    assert [ids for ids, _ in got] == expected
    assert [stopped for _, stopped in got] == [bool(row) and row[-1] in stops for row in expected]
    lengths = {len(row) for row in expected}
    assert len(lengths) >= 3 and max(lengths) == 40  # rows end at their stop tokens, at varied steps, or run out


def test_the_ngram_ban_changes_what_greedy_writes(llama):
    """Guarded is not greedy on the looping model: the comparison above exercises the ban."""
    model, sources, pad_id, stops, greedy = causal_case(llama, "greedy")
    guarded = {**greedy, **DECODING["guarded"]}
    plain = engine_rows(model, sources, pad_id, stops, greedy, 40, CAUSAL, batch=6)
    banned = engine_rows(model, sources, pad_id, stops, guarded, 40, CAUSAL, batch=6)
    assert sum(a != b for a, b in zip(plain, banned, strict=True)) >= 2


@pytest.mark.parametrize("preset", ["greedy", "guarded"])
def test_sorted_continuous_batches_give_transformers_greedy_recipes(llama, preset, monkeypatch):
    """Six prompts on two slots, length-sorted, finished rows refilled from the queue: each recipe is
    the one Transformers writes for its prompt alone."""
    from chef_genius.generation import causal

    model, sources, pad_id, stops, settings = causal_case(llama, preset)
    prefills = []
    original = causal.CausalDecoder._prefill
    monkeypatch.setattr(causal.CausalDecoder, "_prefill",
                        lambda self, slots, prompts: prefills.append(slots) or original(self, slots, prompts))
    got = engine_rows(model, sources, pad_id, stops, settings, 40, CAUSAL, batch=2,
                      options=EngineOptions(check_every=3))
    expected = [transformers_rows(model, [s], pad_id, stops, settings, 40, CAUSAL)[0] for s in sources]
    assert [ids for ids, _ in got] == expected
    assert len(prefills) >= 4 and any(len(slots) == 1 for slots in prefills)  # rows refilled one by one


def repeated_ngram(row: list[int], n: int) -> bool:
    grams = [tuple(row[i:i + n]) for i in range(len(row) - n + 1)]
    return len(grams) != len(set(grams))


@pytest.mark.parametrize("preset,n", [("guarded", 8), ("careful", 10), ("chef", 3)])
def test_the_ngram_ban_never_lets_an_ngram_repeat(llama, preset, n):
    """Prompt and recipe together (Transformers bans over both), on the fast path; without the
    ban the same model loops (greedy)."""
    model, sources, pad_id, stops, settings = causal_case(llama, preset)
    model.lm_head.bias.data.zero_()  # no early end: long rows, every chance to loop
    got = engine_rows(model, sources * 4, pad_id, stops, settings, 60, CAUSAL, batch=8,
                      options=EngineOptions(check_every=4, race=True))
    assert all(not repeated_ngram(source + ids, n) for source, (ids, _) in zip(sources * 4, got, strict=True))
    free = engine_rows(model, sources, pad_id, stops, {**NEUTRAL, **DECODING["greedy"]}, 60, CAUSAL, batch=8)
    assert any(repeated_ngram(source + ids, n) for source, (ids, _) in zip(sources, free, strict=True))


@pytest.mark.parametrize("stop", ["end_of_turn", "eos"])
def test_stop_tokens_end_rows(llama, stop):
    model, tokenizer = llama
    token = end_of_turn_id(tokenizer) if stop == "end_of_turn" else tokenizer.eos_token_id
    model = sharpened(model, tokenizer, scale=1.0, stop_bias=0.0)
    model.lm_head.bias.data[token] = 100.0
    rows = generate_details(model, tokenizer, PROMPTS[:3], CAUSAL, "careful", 12, engine="chef-genius")
    assert all(g.stopped and g.tokens == 0 and g.text == "" for [g] in rows)
    model.lm_head.bias.data[token] = -100.0
    model.lm_head.bias.data[[end_of_turn_id(tokenizer), tokenizer.eos_token_id]] = -100.0
    rows = generate_details(model, tokenizer, PROMPTS[:3], CAUSAL, "careful", 12, engine="chef-genius")
    assert all(not g.stopped and g.tokens == 12 for [g] in rows)


def test_a_row_stops_where_the_model_positions_end(llama):
    """The tiny Llama has 256 positions: asked for 300 tokens, every row ends at 256 with its prompt."""
    model, tokenizer = llama
    sources = CAUSAL.encode_sources(tokenizer, PROMPTS, 64)
    greedy = {**NEUTRAL, **DECODING["greedy"]}
    got = engine_rows(model, sources, tokenizer.pad_token_id, CAUSAL.stop_ids(tokenizer), greedy, 300, CAUSAL, batch=4,
                      options=EngineOptions(check_every=8))
    assert [len(s) + len(ids) for s, (ids, stopped) in zip(sources, got, strict=True) if not stopped] == [256] * 6


def permutation_p(a: list[list[int]], b: list[list[int]], statistic, rounds: int = 300) -> float:
    """P-value of ``statistic(a, b)`` under the null that recipes of a and b come from one
    distribution: recipes (not tokens, which depend on each other) are shuffled between the sides."""
    rng = np.random.default_rng(0)
    pooled, observed = a + b, statistic(a, b)
    hits = 0
    for _ in range(rounds):
        order = rng.permutation(len(pooled))
        shuffled = [pooled[i] for i in order]
        hits += statistic(shuffled[:len(a)], shuffled[len(a):]) >= observed
    return (hits + 1) / (rounds + 1)


def token_distance(a: list[list[int]], b: list[list[int]]) -> float:
    """Total variation distance between the two sides' token frequencies."""
    size = 1 + max(max((max(r) for r in a + b if r), default=0), 0)
    fa = np.bincount([t for r in a for t in r], minlength=size) / max(1, sum(map(len, a)))
    fb = np.bincount([t for r in b for t in r], minlength=size) / max(1, sum(map(len, b)))
    return float(np.abs(fa - fb).sum() / 2)


def length_distance(a: list[list[int]], b: list[list[int]]) -> float:
    """Kolmogorov-Smirnov distance between the two sides' recipe lengths."""
    la, lb = np.sort([len(r) for r in a]), np.sort([len(r) for r in b])
    grid = np.union1d(la, lb)
    return float(np.max(np.abs(np.searchsorted(la, grid, "right") / len(la) - np.searchsorted(lb, grid, "right")
                               / len(lb))))


def test_sampled_recipes_follow_transformers_distribution(llama):
    """`careful` with a seed, 144 recipes each: Transformers (16-row batches) against the engine's
    fast path (sorted, continuous, checked every 4 steps, the CUDA graph's exponential-race
    sampler). Neither token frequencies nor lengths differ (p > 0.01); the same tests reject the
    engine at temperature 1.0 and top-p 1.0 instead (p < 0.01), so they can fail."""
    model, sources, pad_id, stops, settings = causal_case(llama, "careful")
    many = sources * 24
    reference: list[list[int]] = []
    for first in range(0, len(many), 16):
        reference += transformers_rows(model, many[first:first + 16], pad_id, stops, settings, 24, CAUSAL,
                                       seed=first)
    fast = EngineOptions(check_every=4, race=True)
    engine = [ids for ids, _ in engine_rows(model, many, pad_id, stops, settings, 24, CAUSAL, batch=16, options=fast,
                                            seed=7)]
    hotter = {**settings, "temperature": 1.0, "top_p": 1.0}
    changed = [ids for ids, _ in engine_rows(model, many, pad_id, stops, hotter, 24, CAUSAL, batch=16, options=fast,
                                             seed=7)]
    assert engine != reference  # drawn in another order: a distribution to compare, not a copy
    lengths = {len(r) for r in reference}
    assert 24 in lengths and len(lengths) > 10  # rows end at stop tokens at many steps, and at the limit
    assert permutation_p(reference, engine, token_distance) > 0.01
    assert permutation_p(reference, engine, length_distance) > 0.01
    assert min(permutation_p(reference, changed, token_distance),
               permutation_p(reference, changed, length_distance)) < 0.01
    assert not math.isnan(token_distance(reference, engine))


def test_generate_details_with_the_engine_gives_todays_greedy_recipes(llama):
    tokenizer = llama[1]
    model = sharpened(*llama)
    for preset in ("greedy", "guarded"):
        today = generate_details(model, tokenizer, PROMPTS, CAUSAL, preset, 20, batch_size=4)
        assert len({g.text for [g] in today}) >= 3 and {g.stopped for [g] in today} == {True, False}
        assert generate_details(model, tokenizer, PROMPTS, CAUSAL, preset, 20, batch_size=4,
                                engine="chef-genius") == today
    # Grounded decoding and beam search stay on Transformers' path: the same recipes either way.
    assert (generate_details(model, tokenizer, PROMPTS[:2], CAUSAL, "greedy", 12, grounded=2.0, engine="chef-genius")
            == generate_details(model, tokenizer, PROMPTS[:2], CAUSAL, "greedy", 12, grounded=2.0))
    assert (generate_details(model, tokenizer, PROMPTS[:2], CAUSAL, "beam", 12, engine="chef-genius")
            == generate_details(model, tokenizer, PROMPTS[:2], CAUSAL, "beam", 12))
    three = generate_details(model, tokenizer, PROMPTS[:2], CAUSAL, "careful", 12, num_return_sequences=3,
                             engine="chef-genius")
    assert [len(row) for row in three] == [3, 3] and len({g.text for g in three[0]}) > 1
    with pytest.raises(Exception, match="unknown generation engine"):
        generate_details(model, tokenizer, PROMPTS, CAUSAL, "greedy", 5, engine="vllm")


def test_batch_size_counts_rows_with_either_engine(llama, monkeypatch):
    """``batch_size`` is rows decoded at once, a return sequence each a row: Transformers gets
    batch_size // n prompts a call, the engine batch_size slots (evaluate's 3-sample protocol and
    best-of-N used to halve or divide it again on the engine)."""
    import chef_genius.generation.engine as engine_module

    tokenizer = llama[1]
    model = sharpened(*llama)
    widths = []
    original = model.generate
    monkeypatch.setattr(model, "generate", lambda **kw: widths.append(kw["input_ids"].shape[0]) or original(**kw))
    generate_details(model, tokenizer, PROMPTS, CAUSAL, "careful", 6, num_return_sequences=3, batch_size=7,
                     engine="transformers")
    assert widths == [2, 2, 2]  # 6 prompts, 7 // 3 = 2 a batch: 6 rows each
    slots = []
    original_decoder = engine_module.CausalDecoder
    monkeypatch.setattr(engine_module, "CausalDecoder",
                        lambda *a, **kw: slots.append(a[5]) or original_decoder(*a, **kw))
    rows = generate_details(model, tokenizer, PROMPTS, CAUSAL, "careful", 6, num_return_sequences=3, batch_size=7,
                            engine="chef-genius")
    assert slots == [7] and [len(r) for r in rows] == [3] * 6


def test_a_lora_adapter_decodes_through_peft_the_same(llama):
    """Runs are LoRA adapters by default: the engine calls the PEFT model as Transformers does."""
    from peft import LoraConfig, TaskType, get_peft_model

    tokenizer = llama[1]
    model = get_peft_model(sharpened(*llama), LoraConfig(task_type=TaskType.CAUSAL_LM, r=4, lora_alpha=8,
                                                         target_modules=["q_proj", "v_proj"]))
    with torch.no_grad():  # PEFT starts B at zero: give the adapter something to change
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.5, generator=torch.Generator().manual_seed(3))
    model.eval()
    today = generate_details(model, tokenizer, PROMPTS, CAUSAL, "guarded", 20, batch_size=4)
    with model.disable_adapter():
        assert today != generate_details(model, tokenizer, PROMPTS, CAUSAL, "guarded", 20, batch_size=4)
    assert generate_details(model, tokenizer, PROMPTS, CAUSAL, "guarded", 20, batch_size=4,
                            engine="chef-genius") == today



@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("preset", ["greedy", "guarded"])
@pytest.mark.parametrize("fused", [False, True, "compiled"], ids=["forward", "fused", "compiled"])
def test_cuda_graph_path_writes_transformers_greedy_recipes(llama, preset, fused):
    """On a GPU: decode steps captured as CUDA graphs and replayed, rows refilled between replays,
    give each prompt's own greedy recipe (float32, so that batching cannot flip a near tie); with
    ``fused``, the graph holds `LlamaDecodeStep` instead of the model's forward; "compiled": its
    layers compiled (Triton kernels inside the graph)."""
    model, sources, pad_id, stops, settings = causal_case(llama, preset)
    model = model.cuda()
    got = engine_rows(model, sources * 3, pad_id, stops, settings, 40, CAUSAL, batch=4,
                      options=EngineOptions(check_every=4, graphs=True, fused=bool(fused),
                                            compiled=fused == "compiled"))
    expected = [transformers_rows(model, [s], pad_id, stops, settings, 40, CAUSAL)[0] for s in sources]
    assert [ids for ids, _ in got] == expected * 3


def test_cache_keyword_follows_the_forward_signature():
    """Transformers 5.17 (the device machine's) names the cache ``past_key_values``; 5.2x ``cache``."""
    from chef_genius.generation.state import cache_keyword

    class Old(torch.nn.Module):
        def forward(self, input_ids, past_key_values=None, use_cache=None):
            return input_ids

    class New(torch.nn.Module):
        def forward(self, input_ids, cache=None, use_cache=None):
            return input_ids

    assert cache_keyword(Old()) == "past_key_values"
    assert cache_keyword(New()) == "cache"


def test_grouped_attention_equals_transformers_sdpa_with_repeated_heads():
    """One query token per row, 9 query heads over 3 key/value heads (SmolLM2's grouping), a padded
    additive mask: the same output as Transformers' SDPA, which repeats keys and values."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    from chef_genius.generation.attention import grouped_attention

    torch.manual_seed(0)
    batch, heads, kv_heads, length, dim = 4, 9, 3, 11, 8
    query = torch.randn(batch, heads, 1, dim)
    key, value = torch.randn(batch, kv_heads, length, dim), torch.randn(batch, kv_heads, length, dim)
    allowed = torch.arange(length)[None, :] >= torch.tensor([0, 2, 5, 10])[:, None]
    mask = torch.zeros(batch, 1, 1, length).masked_fill(~allowed[:, None, None, :], torch.finfo(torch.float32).min)
    module = torch.nn.Module()
    module.num_key_value_groups, module.is_causal, module.training = heads // kv_heads, False, False
    ours, _ = grouped_attention(module, query, key, value, mask, scaling=dim ** -0.5)
    theirs, _ = sdpa_attention_forward(module, query, key, value, mask, scaling=dim ** -0.5)
    assert ours.shape == theirs.shape == (batch, 1, heads, dim)
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-6)
    # the last row sees only its final column: its output is that column's value, head by head
    torch.testing.assert_close(ours[3, 0], value[3, :, -1].repeat_interleave(heads // kv_heads, dim=0))


def test_engine_decodes_through_grouped_attention_and_restores_the_model(monkeypatch, llama):
    from chef_genius.generation import attention

    calls = []
    original = attention.grouped_attention

    def counting(*args, **kwargs):
        calls.append(args[1].shape[2])
        return original(*args, **kwargs)

    monkeypatch.setattr(attention, "grouped_attention", counting)
    model, tokenizer = llama
    before = model.config._attn_implementation
    sources = [tokenizer("Title: Soup")["input_ids"], tokenizer("Create a recipe: bread")["input_ids"]]
    with torch.no_grad():
        generate_ids(model, sources, CAUSAL, {"do_sample": False}, [tokenizer.eos_token_id], tokenizer.pad_token_id,
                     5, 2)
    assert 1 in calls  # decode steps, one query token a row
    assert model.config._attn_implementation == before
