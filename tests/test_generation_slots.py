"""The server's long-lived decoder (`generation.slots.SlotDecoder`) and its per-row rules
(`generation.rowrules`): the same bans and probabilities as the batch rules, `generate`'s greedy
recipes with rows admitted one by one into freed slots of a growing cache, and the graph's hashed
sampler: a seeded row's draws depend on nothing else, and follow the probabilities."""

from __future__ import annotations

import pytest
import torch

from chef_genius.families import CAUSAL
from chef_genius.generation.rowrules import RowRules, ban_ngrams_per_row, race_noise
from chef_genius.generation.rules import DecodingRule, ban_repeated_ngrams, warp
from chef_genius.generation.slots import SlotDecoder
from chef_genius.inference import DECODING, NEUTRAL

CPU = torch.device("cpu")


def test_a_ban_per_row_is_each_rows_own_ban():
    torch.manual_seed(0)
    history = torch.randint(0, 6, (7, 40))
    length = torch.tensor([40, 3, 10, 25, 1, 0, 33])
    sizes = torch.tensor([0, 2, 3, 1, 10, 3, 8])
    scores = torch.randn(7, 6)
    banned = ban_ngrams_per_row(scores, history, length, sizes, 10)
    for row, n in enumerate(sizes.tolist()):
        alone = scores[row:row + 1] if n == 0 else \
            ban_repeated_ngrams(scores[row:row + 1], history[row:row + 1], length[row:row + 1], n)
        assert torch.equal(banned[row:row + 1], alone), row
    assert torch.isinf(banned).any() and not torch.isinf(banned[0]).any()


def test_rows_with_different_presets_get_each_presets_probabilities():
    names = ["careful", "chef", "sample", "greedy", "guarded"]
    rules = RowRules(len(names), CPU, 10)
    for slot, name in enumerate(names):
        rules.set([slot], {**NEUTRAL, **DECODING[name]}, [slot])
    torch.manual_seed(1)
    logits, history = torch.randn(len(names), 300) * 3, torch.randint(0, 300, (len(names), 30))
    length = torch.full((len(names),), 30)
    scores, probs = rules.scores(logits, history, length, None)
    for slot, name in enumerate(names):
        rule = DecodingRule.from_settings({**NEUTRAL, **DECODING[name]})
        expected = logits[slot:slot + 1]
        if rule.no_repeat_ngram_size:
            expected = ban_repeated_ngrams(expected, history[slot:slot + 1], length[slot:slot + 1],
                                           rule.no_repeat_ngram_size)
        assert torch.equal(scores[slot:slot + 1], expected)
        if rule.do_sample:
            assert torch.equal(probs[slot:slot + 1], warp(expected, rule).softmax(-1)), name
    with pytest.raises(ValueError, match="beam search"):
        rules.set([0], {**NEUTRAL, **DECODING["beam"]}, [0])


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_compiled_choice_at_a_real_vocabulary_is_the_eager_choice():
    """serve --compile-step compiles `RowRules.choose` (its top-p's running sum left eager: Inductor
    failed on its split scan at SmolLM2's 49,152 tokens, 64 rows); every preset's tokens as eager."""
    names = (["careful", "chef", "sample", "greedy", "guarded"] * 13)[:64]  # the server's 64 slots
    cuda = torch.device("cuda")
    rules = RowRules(len(names), cuda, 10)
    for slot, name in enumerate(names):
        rules.set([slot], {**NEUTRAL, **DECODING[name]}, [slot])
    gen = torch.Generator(device=cuda).manual_seed(2)
    logits = torch.randn(len(names), 49152, device=cuda, generator=gen) * 3
    history = torch.randint(0, 49152, (len(names), 40), device=cuda, generator=gen)
    length, counts = torch.full((len(names),), 40, device=cuda), torch.full((len(names),), 7, device=cuda)
    compiled = torch.compile(rules.choose, dynamic=False)
    with torch.inference_mode():  # as the slot loop runs it
        got = compiled(logits, history, length, counts, None)
        eager = rules.choose(logits, history, length, counts, None)
    assert (got == eager).sum() >= len(names) - 1  # fused softmax: a one-ulp near-tie may flip one row
    assert got.shape == (len(names),) and len(set(got.tolist())) > len(names) // 2


@pytest.fixture(scope="module")
def random_llama():
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                                         pad_token_id=0))
    return model.eval()


@pytest.fixture(scope="module")
def random_gemma():
    """Gemma 3's layout (sliding-window layers, an 8-token window the rows pass many times over)."""
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    torch.manual_seed(0)
    config = Gemma3TextConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                              num_attention_heads=4, num_key_value_heads=1, head_dim=8, sliding_window=8,
                              layer_types=["sliding_attention", "full_attention"], max_position_embeddings=512,
                              pad_token_id=0, query_pre_attn_scalar=8, attn_implementation="sdpa")
    return Gemma3ForCausalLM(config).eval()


PROMPTS = [[5, 9, 12], [7] * 11, [3, 4, 5, 6, 7, 8], [20, 21], [33, 34, 35, 36, 37, 38, 39, 40, 41]]
STOPS = [1, 2]


def turn(decoder, steps: int, owner: dict[int, int], got: dict[int, list[int]]) -> None:
    """``steps`` decode steps, then each owned slot's new tokens appended to its row in ``got``
    (checked against the decoder's count); finished slots freed and dropped from ``owner``."""
    decoder.advance(steps)
    counts, finished, fresh = decoder.read()
    for slot, index in list(owner.items()):
        got[index] += fresh[slot]
        assert len(got[index]) == counts[slot]
        if finished[slot]:
            decoder.free([slot])
            del owner[slot]


CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=CUDA)])
@pytest.mark.parametrize("preset", ["greedy", "guarded"])
@pytest.mark.parametrize("arch", ["llama", "gemma", "llama-fused", "llama-compiled"])
def test_rows_admitted_into_freed_slots_write_the_engines_recipes(request, arch, preset, device):
    """On CUDA: captured decode steps replayed, captured again as the cache grows. Gemma 3: its
    sliding-window layers' own mask, on the eager slots' written columns too. ``llama-fused``: the
    steps (the graph's, on CUDA) through `LlamaDecodeStep` (serve --fused-step); ``llama-compiled``:
    on CUDA its layers and the per-row sampling compiled inside the graph (serve --compile-step; the
    CPU's eager slots do not compile)."""
    from chef_genius.generation import EngineOptions, generate_ids

    arch, _, fused = arch.partition("-")
    random_model = request.getfixturevalue(f"random_{arch}")
    model = random_model.to(device)
    settings = {**NEUTRAL, **DECODING[preset]}
    limits = [70, 20, 45, 90, 30]
    exact = EngineOptions(exact=True)
    expected = [generate_ids(model, [p], CAUSAL, settings, STOPS, 0, limit, 1, options=exact)[0][0]
                for p, limit in zip(PROMPTS, limits, strict=True)]
    # On CUDA the first replay of a capture comes after two real warm-up steps: 1 + 3 + 2 tokens a turn.
    decoder = SlotDecoder(model, STOPS, 0, slots=2, max_new_tokens=100, race=device == "cuda", window=6,
                          fused=bool(fused), compiled=fused == "compiled")
    got: dict[int, list[int]] = {}
    owner: dict[int, int] = {}
    waiting = list(range(len(PROMPTS)))
    with torch.inference_mode():
        while waiting or owner:
            free = [s for s in range(2) if s not in owner]
            if waiting and free:
                index = waiting.pop(0)
                decoder.admit([free[0]], [PROMPTS[index]], [limits[index]], [settings], [None], busy=bool(owner))
                owner[free[0]], got[index] = index, []
            turn(decoder, 3, owner, got)
    random_model.to("cpu")
    assert [got[i] for i in range(len(PROMPTS))] == expected
    assert decoder.capacity >= 128  # grew past the first 64 columns while rows were decoding
    assert (decoder._lean is not None) == (arch == "llama" and (bool(fused) or device == "cpu"))  # CPU: lean anyway


def test_eager_steps_run_only_the_rows_still_writing(random_llama):
    """A server's idle slots cost nothing on a CPU: one request in 8 slots decodes a batch of one,
    and writes what it writes alone."""
    from chef_genius.generation import EngineOptions, generate_ids

    settings = {**NEUTRAL, **DECODING["greedy"]}
    batches: list[int] = []
    decoder = SlotDecoder(random_llama, STOPS, 0, slots=8, max_new_tokens=40, graphs=False, race=False)
    forward = decoder._forward  # the model's forward, or the CPU's lean step: every pass goes through it
    decoder._forward = lambda ids, *rest: (batches.append(ids.shape[0]), forward(ids, *rest))[1]
    written = []
    with torch.inference_mode():
        decoder.admit([5], [PROMPTS[0]], [40], [settings], [None], busy=False)
        for _ in range(20):
            decoder.advance(2)
            counts, finished, fresh = decoder.read()
            written += fresh[5]
            if finished[5]:
                break
    expected = generate_ids(random_llama, [PROMPTS[0]], CAUSAL, settings, STOPS, 0, 40, 1,
                            options=EngineOptions(exact=True))[0][0]
    assert written == expected and len(batches) > 5
    assert set(batches) == {1}  # the prefill and every step: the one row, never the 8 slots


def test_a_seeded_requests_rows_draw_the_same_after_a_sibling_ends(random_llama):
    """Eager draws: a request's generator draws for all its rows each step, ended ones too (as
    `generate` does), so a row's tokens do not depend on when its siblings stop; found by review
    when idle rows left the step: rows beside an ended one then wrote other tokens."""
    settings = {**NEUTRAL, **DECODING["sample"]}
    ends = [1, 2, 3, 4, 5, 6]

    def run(stops: list[int], seed: int) -> list[list[int]]:
        decoder = SlotDecoder(random_llama, stops, 0, slots=8, max_new_tokens=30, graphs=False, race=False, window=6)
        generator = torch.Generator().manual_seed(seed)
        slots, written = [1, 4, 6], [[], [], []]
        with torch.inference_mode():
            decoder.admit(slots, [PROMPTS[0]] * 3, [30] * 3, [settings] * 3, [None] * 3, [generator] * 3, busy=False)
            for _ in range(20):
                decoder.advance(3)
                _, finished, fresh = decoder.read()
                for row, slot in enumerate(slots):
                    written[row] += fresh[slot]
                if all(finished[slot] for slot in slots):
                    break
        return written

    def up_to_an_end(tokens: list[int]) -> list[int]:
        return next((tokens[:k + 1] for k, t in enumerate(tokens) if t in ends), tokens)

    for seed in (9, 3):
        stopped, endless = run(ends, seed), run([0], seed)
        assert len({len(row) for row in stopped}) == 3  # rows end at different steps
        assert stopped == [up_to_an_end(row) for row in endless]


def test_the_hashed_race_is_a_function_of_the_seed_alone(random_llama):
    settings = {**NEUTRAL, **DECODING["sample"]}

    def run(slots: int, rows: list[tuple[list[int], int]]) -> list[list[int]]:
        decoder = SlotDecoder(random_llama, STOPS, 0, slots=slots, max_new_tokens=30, graphs=False, race=True)
        with torch.inference_mode():
            decoder.admit(list(range(len(rows))), [p for p, _ in rows], [30] * len(rows), [settings] * len(rows),
                          [seed for _, seed in rows], busy=False)
            written = [[] for _ in rows]
            for _ in range(12):
                decoder.advance(3)
                fresh = decoder.read()[2]
                for i in range(len(rows)):
                    written[i] += fresh[i]
        return written

    alone = run(1, [(PROMPTS[0], 7)])[0]
    crowded = run(4, [(PROMPTS[1], 3), (PROMPTS[0], 7), (PROMPTS[2], 8), (PROMPTS[0], 9)])
    assert crowded[1] == alone and len(alone) > 10
    assert crowded[3] != alone  # another seed, other draws


def test_the_hashed_race_draws_by_the_probabilities():
    torch.manual_seed(0)
    probs = torch.softmax(torch.randn(12) * 1.5, dim=-1)
    draws = 20_000
    seeds = torch.arange(draws) * 7919 + 3
    counts = torch.arange(draws) % 97
    chosen = (probs[None, :] / race_noise(seeds, counts, 12)).argmax(-1)
    observed = torch.bincount(chosen, minlength=12).double()
    expected = probs.double() * draws
    chi2 = float(((observed - expected) ** 2 / expected).sum())
    assert chi2 < 35.0  # 11 degrees of freedom: p < 0.001 above 31.3; a fair draw rarely exceeds it
    noise = race_noise(torch.tensor([1, 1, 2]), torch.tensor([5, 5, 5]), 1000)
    assert torch.equal(noise[0], noise[1]) and not torch.equal(noise[0], noise[2])


def test_each_size_keeps_its_captured_step(random_llama, monkeypatch):
    """A graph decoder that grows, empties, shrinks and grows again captures each cache size once:
    coming back to a size replays the step captured there (its state reset: no stale row writes),
    and every row still writes the engine's recipe. The capture is stood in for on the CPU by its
    effect: two real warm-up steps, then a replay that runs the step."""
    import chef_genius.generation.causal as causal
    from chef_genius.generation import EngineOptions, generate_ids

    captured = []
    decoder = None

    def fake_capture(step, warmups=2):
        for _ in range(warmups):
            step()
        bound = (decoder.state, decoder.cache)  # a real graph replays onto the tensors it was captured on
        captured.append(bound)

        def replay():
            assert (decoder.state, decoder.cache) == bound, "a captured step replayed on another size's tensors"
            step()
        return replay

    monkeypatch.setattr(causal, "capture", fake_capture)
    settings = {**NEUTRAL, **DECODING["guarded"]}
    prompts, limits = [PROMPTS[0], PROMPTS[1], PROMPTS[3], PROMPTS[4]], [20, 300, 15, 280]
    expected = [generate_ids(random_llama, [p], CAUSAL, settings, STOPS, 0, limit, 1,
                             options=EngineOptions(exact=True))[0][0] for p, limit in zip(prompts, limits, strict=True)]
    decoder = SlotDecoder(random_llama, STOPS, 0, slots=2, max_new_tokens=400, race=True, window=12)
    decoder.graphs = True
    got: dict[int, list[int]] = {}
    sizes = []

    def run(owner: dict[int, int]) -> None:
        while owner:
            turn(decoder, 4, owner, got)
            if 0 in owner and 1 not in owner and 1 not in got:  # the second row joins a busy decoder
                decoder.admit([1], [prompts[1]], [limits[1]], [settings], [None], busy=True)
                owner[1], got[1] = 1, []
                sizes.append(decoder.capacity)

    with torch.inference_mode():
        decoder.admit([0], [prompts[0]], [limits[0]], [settings], [None], busy=False)
        got[0] = []
        sizes.append(decoder.capacity)
        run({0: 0})
        for index in (2, 3):  # idle: shrinks back to the first size, then grows to the second again
            decoder.admit([0], [prompts[index]], [limits[index]], [settings], [None], busy=False)
            got[index] = []
            sizes.append(decoder.capacity)
            assert bool(decoder.state.finished[1]) and int(decoder.state.count[1]) == 0  # the kept state was reset
            run({0: index})
    assert sizes == [64, 512, 64, 512]
    assert len(captured) == 2
    assert [got[i] for i in range(4)] == expected


def test_prefill_shapes_come_in_buckets_up_to_a_size():
    from chef_genius.generation.prefill import MAX_GRAPH_TOKENS, MAX_GRAPH_WIDTH, WIDTH_STEP, prefill_shape

    assert prefill_shape([3, 11, 6], bucketed=False) == (3, 11, False)
    assert prefill_shape([3, 11, 6], bucketed=True) == (4, WIDTH_STEP, True)
    assert prefill_shape([40] * 13, bucketed=True) == (16, 2 * WIDTH_STEP, True)
    assert prefill_shape([33], bucketed=True) == (1, 2 * WIDTH_STEP, True)
    big = [MAX_GRAPH_TOKENS // 64 + 1] * 64  # its bucket is over the limit: the exact shape, eager
    assert prefill_shape(big, bucketed=True) == (64, big[0], False)
    assert prefill_shape([MAX_GRAPH_WIDTH + 1], bucketed=True) == (1, MAX_GRAPH_WIDTH + 1, False)  # too wide


BUCKET_PROMPTS = PROMPTS + [[11, 12, 13, 14], [50] * 40, [9, 8, 7]]
BUCKET_LIMITS = [25, 30, 20, 35, 28, 22, 30, 26]
WAVES = [[0], [1, 2, 3], [4, 5, 6], [7]]  # buckets (1, 32), (4, 32), (4, 64): a 40-token prompt, (1, 32) again


def admit_in_waves(decoder, settings: dict) -> list[list[int]]:
    """`BUCKET_PROMPTS` admitted several at once into a busy decoder of 8 slots (`WAVES`, 2 steps
    apart), decoded to their ends; each row's tokens."""
    got: dict[int, list[int]] = {}
    owner: dict[int, int] = {}
    with torch.inference_mode():
        for wave in WAVES:
            free = [s for s in range(8) if s not in owner][:len(wave)]
            decoder.admit(free, [BUCKET_PROMPTS[i] for i in wave], [BUCKET_LIMITS[i] for i in wave],
                          [settings] * len(wave), [None] * len(wave), busy=bool(owner))
            owner.update(zip(free, wave, strict=True))
            got.update({i: [] for i in wave})
            turn(decoder, 2, owner, got)
        while owner:
            turn(decoder, 4, owner, got)
    return [got[i] for i in range(len(BUCKET_PROMPTS))]


def engines_recipes_of(model, settings: dict, prompts: list[list[int]], limits: list[int]) -> list[list[int]]:
    from chef_genius.generation import EngineOptions, generate_ids

    return [generate_ids(model, [p], CAUSAL, settings, STOPS, 0, limit, 1, options=EngineOptions(exact=True))[0][0]
            for p, limit in zip(prompts, limits, strict=True)]


def engines_recipes(model, settings: dict) -> list[list[int]]:
    return engines_recipes_of(model, settings, BUCKET_PROMPTS, BUCKET_LIMITS)


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=CUDA)])
@pytest.mark.parametrize("preset", ["greedy", "guarded"])
def test_newcomers_prefilled_in_buckets_write_the_engines_recipes(random_llama, preset, device):
    """Prompts admitted several at once into a busy decoder, in shape buckets (rows padded to a power
    of two by repeating the last one, width left-padded to a multiple of 32): on CUDA each bucket's
    prefill captured once and replayed, its keys and values copied into the rows' slots; on the CPU
    the same shapes run eagerly. Every row writes what it writes alone."""
    model = random_llama.to(device)
    settings = {**NEUTRAL, **DECODING[preset]}
    expected = engines_recipes(model, settings)
    decoder = SlotDecoder(model, STOPS, 0, slots=8, max_new_tokens=40, race=device == "cuda", window=7,
                          prefill_graphs=True)
    got = admit_in_waves(decoder, settings)
    random_llama.to("cpu")
    assert got == expected
    if device == "cuda":  # one graph per bucket met, the first one replayed by the last wave
        assert sorted(decoder._prefills) == [(1, 32), (4, 32), (4, 64)]


class EagerGraph:
    """`prefill.PrefillGraph` stood in for on the CPU: the same forward on the same scratch cache and
    shared buffer, run at each call instead of replayed; ``fail`` names shapes whose capture raises."""

    made: list[tuple[int, int]] = []
    replays: list[tuple[int, int]] = []
    fail: set[tuple[int, int]] = set()

    def __init__(self, forward, rows, width, device, pool, buffer):
        from chef_genius.generation.prefill import ScratchCache

        if (rows, width) in self.fail:
            raise RuntimeError("CUDA out of memory (stood in for)")
        self.forward, self.cache = forward, ScratchCache(buffer)
        self.made.append((rows, width))

    def __call__(self, ids, starts):
        self.replays.append(tuple(ids.shape))
        return self.forward(ids, starts, self.cache), self.cache.keys, self.cache.values


@pytest.fixture
def stood_in_graphs(monkeypatch):
    """A decoder's CUDA graphs on the CPU: prefills by `EagerGraph`, decode steps by their two warm-up
    steps then the step itself at each replay."""
    import chef_genius.generation.causal as causal

    def fake_capture(step, warmups=2):
        for _ in range(warmups):
            step()
        return step

    EagerGraph.made, EagerGraph.replays, EagerGraph.fail = [], [], set()
    monkeypatch.setattr(causal, "PrefillGraph", EagerGraph)
    monkeypatch.setattr(causal, "capture", fake_capture)
    monkeypatch.setattr(torch.cuda, "graph_pool_handle", lambda: None)

    def make(model, **options) -> SlotDecoder:
        decoder = SlotDecoder(model, STOPS, 0, race=True, prefill_graphs=True, **options)
        decoder.graphs = True
        return decoder
    return make


def test_a_captured_prefills_path_writes_what_an_eager_prefill_writes(random_llama, stood_in_graphs):
    """The captured prefill's path on the CPU: the forward on a scratch cache, its keys and values
    left in the decoder's one shared buffer and copied into the rows' slots, the bucket's extra rows
    dropped. The rows write the engine's recipes, and a server's warm-up captured every row bucket of
    8 slots at the usual widths, so the waves captured nothing more."""
    from chef_genius.generation.prefill import WARM_WIDTHS

    settings = {**NEUTRAL, **DECODING["guarded"]}
    decoder = stood_in_graphs(random_llama, slots=8, max_new_tokens=40, window=12)
    with torch.inference_mode():
        assert decoder.warm_prefills() == 8
    assert sorted(EagerGraph.made) == [(r, w) for r in (1, 2, 4, 8) for w in WARM_WIDTHS]
    assert admit_in_waves(decoder, settings) == engines_recipes(random_llama, settings)
    assert len(EagerGraph.made) == 8 and EagerGraph.replays == [(1, 32), (4, 32), (4, 64), (1, 32)]
    room = decoder._prefill_buffer.room
    assert len(room) == 2 and room[0][0].numel() == 4096 * 2 * 8  # 2 layers; 4,096 tokens x 2 kv heads x 8 dims


def test_a_newcomer_grows_the_cache_to_its_buckets_width(random_llama, stood_in_graphs):
    """A busy decoder sized for its rows (64 columns) takes a 29-token prompt with 34 tokens to write:
    29 + 34 + 1 fits 64, but its prefill is 32 wide, so the cache must grow first (found by review:
    sized by the prompt's own width, the prefill wrote past the cache's end)."""
    settings = {**NEUTRAL, **DECODING["greedy"]}
    prompts, limits = [PROMPTS[0], list(range(3, 32))], [20, 34]
    decoder = stood_in_graphs(random_llama, slots=2, max_new_tokens=40, window=12)
    got: dict[int, list[int]] = {0: [], 1: []}
    with torch.inference_mode():
        decoder.admit([0], [prompts[0]], [limits[0]], [settings], [None], busy=False)
        assert decoder.capacity == 64
        turn(decoder, 2, owner := {0: 0}, got)
        decoder.admit([1], [prompts[1]], [limits[1]], [settings], [None], busy=True)
        assert decoder.capacity == 128
        owner[1] = 1
        while owner:
            turn(decoder, 4, owner, got)
    assert [got[0], got[1]] == [engines_recipes_of(random_llama, settings, prompts, limits)[i] for i in (0, 1)]


def test_a_capture_that_fails_leaves_the_prefills_eager(random_llama, stood_in_graphs, capsys):
    """A prefill whose capture fails (out of memory, say) runs eagerly, and so do those after it,
    with one line on stderr: the rows still write the engine's recipes."""
    settings = {**NEUTRAL, **DECODING["greedy"]}
    EagerGraph.fail = {(4, 32)}
    decoder = stood_in_graphs(random_llama, slots=8, max_new_tokens=40, window=12)
    assert admit_in_waves(decoder, settings) == engines_recipes(random_llama, settings)
    assert EagerGraph.replays == [(1, 32)]  # the first wave's; the second failed, the rest ran eagerly
    assert decoder.prefill_graphs is False
    assert "capturing a 4 x 32 prefill failed (RuntimeError: CUDA out of memory" in capsys.readouterr().err
