"""The generation engine (`chef_genius.generation`) writes what `transformers.generate` writes.

Greedy and guarded decoding: token for token, on a tiny Llama (SmolLM2's architecture, from a GGUF
file) with a left-padded batch of varied prompt lengths and on tiny T5 models; with length-sorted,
continuous batching too. Sampled decoding with a seed: the very tokens on the engine's exact path,
and the same token-frequency and length distributions (permutation tests that do reject a changed
temperature) on its fast path with the graph's sampler. The n-gram ban never lets an n-gram
repeat; stop tokens end rows.
"""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch

from chef_genius.encoding import end_of_turn_id
from chef_genius.families import CAUSAL, SEQ2SEQ
from chef_genius.generation import EngineOptions, generate_ids
from chef_genius.generation.rules import ban_repeated_ngrams
from chef_genius.inference import DECODING, NEUTRAL, generate_details
from tests.harness.tiny_causal import write_tiny_gguf

pytest.importorskip("gguf")
TEXTS = ["Title: Soup || Ingredients: 1 cup water | 2 carrots || Steps: Boil the water. | Add the carrots.",
         "Create a recipe: tomato soup with basil, onion and garlic"] * 40
PROMPTS = ["soup", "tomato soup with basil, onion and garlic, slowly", "carrots", "water, onion and a little garlic",
           "basil", "a soup of carrots and water for two"]
EXACT = EngineOptions(exact=True)


@pytest.fixture(scope="module")
def llama(tmp_path_factory):
    """The tiny GGUF Llama and its chat tokenizer."""
    from chef_genius.inference import load_run
    from chef_genius.model.loading import gguf_folder

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("CHEF_GENIUS_CACHE", str(tmp_path_factory.mktemp("cache")))
        loaded = load_run(gguf_folder(write_tiny_gguf(tmp_path_factory.mktemp("gguf") / "tiny.gguf", TEXTS)), "cpu")
    return loaded.model, loaded.tokenizer


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


def _graph_rows_match_transformers(model, sources, preset, family, batches) -> None:
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


def t5_model(gated: bool, seed: int = 0):
    from transformers import T5Config, T5ForConditionalGeneration

    config = T5Config(vocab_size=97, d_model=32, d_kv=8, d_ff=48, num_layers=3, num_decoder_layers=2, num_heads=4,
                      feed_forward_proj="gated-gelu" if gated else "relu", dropout_rate=0.0,
                      decoder_start_token_id=0, pad_token_id=0, eos_token_id=1, relative_attention_num_buckets=8,
                      relative_attention_max_distance=16)
    torch.manual_seed(seed)
    model = T5ForConditionalGeneration(config).eval()
    head = torch.nn.Linear(32, 97, bias=True)
    with torch.no_grad():  # confident enough to loop; EOS a little likelier, so that a ban ends a loop
        head.weight.copy_(model.lm_head.weight * 8.0)
        head.bias.zero_()
        head.bias[1] = 20.0 if gated else 30.0
    model.lm_head = head
    return model


@pytest.mark.parametrize("gated", [True, False])
@pytest.mark.parametrize("preset", ["greedy", "guarded", "careful"])
def test_t5_is_token_identical_to_transformers(gated, preset):
    model = t5_model(gated)
    generator = torch.Generator().manual_seed(1)
    sources = [torch.randint(2, 97, (n,), generator=generator).tolist() + [1] for n in (5, 12, 3, 9, 17, 7, 2)]
    settings = {**NEUTRAL, **DECODING[preset]}
    expected = transformers_rows(model, sources, 0, [1], settings, 30, SEQ2SEQ)
    for batch in (7, 3):  # one batch as Transformers runs it; and sorted batches of three (greedy only)
        options = EXACT if batch == 7 else EngineOptions(check_every=4)
        if batch == 3 and settings["do_sample"]:
            continue
        got = engine_rows(model, sources, 0, [1], settings, 30, SEQ2SEQ, batch=batch, options=options)
        assert [ids for ids, _ in got] == expected
    assert len({len(row) for row in expected}) >= 2 and any(row[-1] == 1 for row in expected)  # EOS, varied steps


def test_t5_with_a_lora_adapter_is_token_identical_to_transformers():
    from test_fast_t5 import with_lora

    model = with_lora(t5_model(True)).eval()
    generator = torch.Generator().manual_seed(1)
    sources = [torch.randint(2, 97, (n,), generator=generator).tolist() + [1] for n in (5, 12, 3, 9, 17, 7, 2)]
    guarded = {**NEUTRAL, **DECODING["guarded"]}
    expected = transformers_rows(model, sources, 0, [1], guarded, 30, SEQ2SEQ)
    with model.disable_adapter():
        assert transformers_rows(model, sources, 0, [1], guarded, 30, SEQ2SEQ) != expected
    got = engine_rows(model, sources, 0, [1], guarded, 30, SEQ2SEQ, batch=3, options=EngineOptions(check_every=4))
    assert [ids for ids, _ in got] == expected


def test_ngram_ban_on_hand_computed_rows():
    history = torch.tensor([[5, 6, 7, 5, 6, 0, 0], [1, 2, 3, 4, 1, 2, 3]])
    length = torch.tensor([5, 7])
    banned = ban_repeated_ngrams(torch.zeros(2, 10), history, length, 3)
    assert torch.isinf(banned[0]).nonzero().flatten().tolist() == [7]  # 5 6 -> 7 was seen
    assert torch.isinf(banned[1]).nonzero().flatten().tolist() == [4]  # 2 3 -> 4 was seen
    assert not torch.isinf(ban_repeated_ngrams(torch.zeros(2, 10), history, torch.tensor([2, 3]), 3)).any()


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


def test_generate_details_with_the_engine_on_t5(t5_tokenizer):
    from transformers import PreTrainedTokenizerFast, T5Config, T5ForConditionalGeneration

    tokenizer = PreTrainedTokenizerFast(tokenizer_object=t5_tokenizer, pad_token="<pad>", eos_token="</s>",
                                        unk_token="<unk>")
    torch.manual_seed(0)
    model = T5ForConditionalGeneration(T5Config(vocab_size=len(tokenizer), d_model=32, d_kv=8, d_ff=64, num_layers=2,
                                                num_heads=4, decoder_start_token_id=0, pad_token_id=0,
                                                eos_token_id=1)).eval()
    for preset in ("greedy", "guarded"):
        today = generate_details(model, tokenizer, PROMPTS, SEQ2SEQ, preset, 16, batch_size=4)
        assert generate_details(model, tokenizer, PROMPTS, SEQ2SEQ, preset, 16, batch_size=4,
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


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("gated", [True, False])
@pytest.mark.parametrize("preset", ["greedy", "guarded"])
def test_t5_cuda_graph_path_writes_transformers_greedy_recipes(gated, preset):
    """On a GPU: the T5 decoder's steps after the first captured as a CUDA graph and replayed (a
    static self-attention cache, cross-attention reused) give Transformers' greedy rows, in one
    batch and in sorted batches of three."""
    model = t5_model(gated).cuda()
    generator = torch.Generator().manual_seed(1)
    sources = [torch.randint(2, 97, (n,), generator=generator).tolist() + [1] for n in (5, 12, 3, 9, 17, 7, 2)]
    _graph_rows_match_transformers(model, sources, preset, SEQ2SEQ, batches=(7, 3))


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


@pytest.mark.parametrize("top_p", [0.9, 1.0])
def test_race_among_top_k_draws_from_the_full_warps_distribution(top_p):
    """The graph sampler's top-k shortcut (top-p over the k best only) keeps exactly the tokens
    `warp` keeps, and its draws follow `warp`'s probabilities: 40,000 draws of 8 rows, every
    token's frequency within 4 standard errors; a changed temperature is rejected by the same test."""
    from chef_genius.generation.rules import DecodingRule, race_among_top_k, warp

    generator = torch.Generator().manual_seed(3)
    scores = torch.randn(8, 300, generator=generator) * 3
    scores[:, 7] = -float("inf")  # a banned token
    rule = DecodingRule(do_sample=True, temperature=0.8, top_k=20, top_p=top_p)
    expected = warp(scores, rule).softmax(dim=-1)
    draws = 40_000
    torch.manual_seed(0)
    many = scores.repeat(draws // 8, 1)
    counts = torch.zeros_like(expected)
    chosen = race_among_top_k(many, rule).view(-1, 8)
    for row in range(8):
        counts[row] = torch.bincount(chosen[:, row], minlength=300).float()
    observed = counts / (draws // 8)
    assert bool(((observed > 0) <= (expected > 0)).all())  # never a token the full warp removes
    stderr = (expected * (1 - expected) / (draws // 8)).sqrt()
    assert bool(((observed - expected).abs() <= 4 * stderr + 1e-9).all())
    hotter = race_among_top_k(many, DecodingRule(do_sample=True, temperature=2.0, top_k=20, top_p=top_p)).view(-1, 8)
    hot = torch.stack([torch.bincount(hotter[:, row], minlength=300).float() for row in range(8)]) / (draws // 8)
    assert bool(((hot - expected).abs() > 4 * stderr + 1e-9).any())


def gemma_model(window: int = 6):
    """A tiny random Gemma 3 (Gemma 3 270M's layout: sliding-window layers and a full one, one
    key/value head, q/k norms), whose window is short enough for the tests' rows to pass it, with a
    confident head that likes token 1 (the stop) a little."""
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    config = Gemma3TextConfig(vocab_size=97, hidden_size=32, intermediate_size=64, num_hidden_layers=3,
                              num_attention_heads=4, num_key_value_heads=1, head_dim=8, sliding_window=window,
                              layer_types=["sliding_attention", "sliding_attention", "full_attention"],
                              max_position_embeddings=256, pad_token_id=0, eos_token_id=1, bos_token_id=2,
                              query_pre_attn_scalar=8, attn_implementation="sdpa")
    torch.manual_seed(5)
    model = Gemma3ForCausalLM(config).eval()
    with torch.no_grad():
        model.lm_head.weight = torch.nn.Parameter(model.model.embed_tokens.weight.detach().clone() * 6)
        model.config.tie_word_embeddings = False
    return model


@pytest.mark.parametrize("preset", ["greedy", "guarded"])
def test_gemma3_with_sliding_window_layers_is_token_identical_to_transformers(preset):
    """Gemma 3's sliding-window layers get a mask of their own (`CausalDecoder._mask`): rows of up
    to 30 new tokens after prompts of 2-17 tokens pass a 6-token window many times over, in one
    left-padded batch, in sorted continuous batches of three, and on the CPU's relaid-out path."""
    from chef_genius.generation import unsupported

    model = gemma_model()
    assert unsupported(model, CAUSAL, NEUTRAL) is None
    generator = torch.Generator().manual_seed(2)
    sources = [[2] + torch.randint(3, 97, (n,), generator=generator).tolist() for n in (5, 12, 1, 9, 16, 7)]
    settings = {**NEUTRAL, **DECODING[preset]}
    expected = transformers_rows(model, sources, 0, [1], settings, 30, CAUSAL)
    assert max(len(s) + len(r) for s, r in zip(sources, expected, strict=True)) > 4 * 6
    for batch, options in ((6, EXACT), (3, EngineOptions(check_every=4)), (3, EngineOptions(cpu_fast=False))):
        got = engine_rows(model, sources, 0, [1], settings, 30, CAUSAL, batch=batch, options=options)
        assert [ids for ids, _ in got] == expected
    wide = copy.deepcopy(model)
    wide.config.sliding_window = 256  # the window never binds: another model, other rows
    assert [ids for ids, _ in engine_rows(wide, sources, 0, [1], settings, 30, CAUSAL, batch=6)] != expected


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("preset", ["greedy", "guarded"])
def test_gemma3_cuda_graph_path_writes_transformers_greedy_rows(preset):
    """On a GPU: Gemma 3's per-layer-type masks inside captured decode steps, replayed with rows
    refilled between replays, give Transformers' greedy rows past the sliding window (float32)."""
    model = gemma_model().cuda()
    generator = torch.Generator().manual_seed(2)
    sources = [[2] + torch.randint(3, 97, (n,), generator=generator).tolist() for n in (5, 12, 1, 9, 16, 7)]
    _graph_rows_match_transformers(model, sources, preset, CAUSAL, batches=(6, 3))


@pytest.mark.parametrize("top_p", [0.9, 1.0])
def test_top_k_warp_keeps_exactly_what_warp_keeps(top_p):
    """Placed back in the vocabulary, the k best warped values are `warp`'s scores bit for bit: on
    ordinary rows, on a row with fewer finite scores than k (an n-gram ban's -inf), at a temperature;
    on a row whose k-th score ties with others, k of the tied tokens are kept where `warp` keeps
    them all (the documented difference)."""
    from chef_genius.generation.rules import DecodingRule, top_k_warp, warp

    generator = torch.Generator().manual_seed(4)
    scores = torch.randn(6, 200, generator=generator) * 2
    scores[1, 5:] = -float("inf")  # only 5 finite scores, k = 20
    rule = DecodingRule(do_sample=True, temperature=0.7, top_k=20, top_p=top_p)

    def placed(rows):
        values, indices = top_k_warp(rows, rule)
        return torch.full_like(rows, -float("inf")).scatter(1, indices, values)

    assert torch.equal(placed(scores), warp(scores, rule))
    assert int(torch.isfinite(placed(scores)[1]).sum()) <= 5
    tied = torch.zeros(1, 200)
    tied[0, :10] = torch.arange(10, 0, -1).float() * 5  # ten clear leaders, then 190 tokens tied at 0
    flat = DecodingRule(do_sample=True, top_k=20, top_p=1.0)
    ours = torch.isfinite(torch.full_like(tied, -float("inf")).scatter(1, *reversed(top_k_warp(tied, flat))))
    theirs = torch.isfinite(warp(tied, flat))
    assert int(ours.sum()) == 20 and int(theirs.sum()) == 200 and bool((ours <= theirs).all())


def test_the_sliding_mask_is_transformers_sliding_window_overlay():
    """`CausalDecoder._mask` for a 3-token window, prefill (every query column of a left-padded
    row) and a decode step (one query per row at its own column): the sliding layers' mask is the
    full one and Transformers' `sliding_window_overlay`, element for element; a model without
    sliding layers gets the one tensor."""
    from types import SimpleNamespace

    from transformers.masking_utils import sliding_window_overlay

    from chef_genius.generation.causal import CausalDecoder

    overlay = sliding_window_overlay(3)
    width = 9
    columns = torch.arange(width)
    starts = torch.tensor([0, 4])
    real = columns[None, :] >= starts[:, None]
    allowed = real[:, None, None, :] & (columns[None, None, None, :] <= columns[None, None, :, None])
    decoder = SimpleNamespace(dtype=torch.float32, sliding=3)
    masks = CausalDecoder._mask(decoder, allowed, columns[None, None, :], columns)
    near = torch.tensor([[overlay(0, 0, q, k) for k in range(width)] for q in range(width)])
    assert torch.equal(masks["sliding_attention"] == 0, allowed & near[None, None])
    assert torch.equal(masks["full_attention"] == 0, allowed)
    written = torch.tensor([7, 9])  # each row's columns so far; the query is the last one
    step = (columns[None, :] >= starts[:, None]) & (columns[None, :] < written[:, None])
    masks = CausalDecoder._mask(decoder, step[:, None, None, :], (written - 1)[:, None, None], columns)
    for row in range(2):
        expected = [bool(step[row, k]) and overlay(0, 0, int(written[row]) - 1, k) for k in range(width)]
        assert (masks["sliding_attention"][row, 0, 0] == 0).tolist() == expected
    assert torch.is_tensor(CausalDecoder._mask(SimpleNamespace(dtype=torch.float32, sliding=None), allowed,
                                               columns[None, None, :], columns))


def test_gemma_features_the_engine_lacks_go_to_transformers():
    from chef_genius.generation import unsupported

    model = gemma_model()
    model.config.final_logit_softcapping = 30.0
    assert "soft-capping" in unsupported(model, CAUSAL, NEUTRAL)
