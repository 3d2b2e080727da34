"""The serving engine in process: what it writes is what `generate` writes (greedy, seeded
sampling, beam; causal and seq2seq; rows batched together or joining a running batch), and it keeps
its bounds (a full queue, a timeout, a cancelled stream). Causal models run on both decoding paths:
the generation engine's slots ("chef-genius", eager on the CPU: seeded rows draw from their
request's generator, so even sampled text is `generate`'s) and Transformers' forward pass."""

from __future__ import annotations

import asyncio
import json
import time

import pytest
import torch

from chef_genius.families import CAUSAL, SEQ2SEQ
from chef_genius.inference import DECODING, NEUTRAL, generate_details
from chef_genius.serve.engine import Engine, EngineBusy
from chef_genius.serve.pieces import GenerationRequest
from tests.harness.tiny_causal import chat_tokenizer
from tests.harness.tiny_server_model import ENDLESS, RECIPE

PROMPTS = ["Create a recipe: Soup", "Create a recipe: Lemon Chicken with chicken, lemon, garlic and thyme", "x"]
KINDS = ["chef-genius", "transformers"]


@pytest.fixture(params=KINDS)
def kind(request) -> str:
    """The serving path a causal model decodes on."""
    return request.param


@pytest.fixture(scope="module")
def random_llama():
    """Random weights: sampled text is all over the vocabulary, so a seed must be honoured exactly."""
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = chat_tokenizer([RECIPE, *PROMPTS])
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64,
                                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                                         max_position_embeddings=1024, pad_token_id=tokenizer.pad_token_id))
    return model.eval(), tokenizer


@pytest.fixture(scope="module")
def random_t5(t5_tokenizer):
    from transformers import PreTrainedTokenizerFast, T5Config, T5ForConditionalGeneration

    tokenizer = PreTrainedTokenizerFast(tokenizer_object=t5_tokenizer, pad_token="<pad>", eos_token="</s>",
                                        unk_token="<unk>")
    torch.manual_seed(0)
    model = T5ForConditionalGeneration(T5Config(vocab_size=len(tokenizer), d_model=32, d_kv=8, d_ff=64, num_layers=2,
                                                num_heads=4, decoder_start_token_id=0, pad_token_id=0,
                                                eos_token_id=1, tie_word_embeddings=False))
    return model.eval(), tokenizer


def _encode(tokenizer, family, prompts):

    return family.encode_sources(tokenizer, prompts, 512)


async def _texts(engine: Engine, requests: list[GenerationRequest], stagger: bool = False) -> list[list[str]]:
    """Each request's row texts; ``stagger``: each request is sent once the previous one has
    written, so it joins a running batch."""
    async def collect(request, started: asyncio.Event | None):
        texts = [""] * request.rows
        async for piece in engine.submit(request):
            assert piece.finish_reason not in ("timeout", "error"), piece.text
            texts[piece.index] += piece.text
            if started is not None:
                started.set()
        return texts

    if not stagger:
        return list(await asyncio.gather(*(collect(r, None) for r in requests)))
    tasks = []
    for request in requests:
        started = asyncio.Event()
        tasks.append(asyncio.create_task(collect(request, started)))
        await started.wait()
    return [await t for t in tasks]


def _settings(name: str) -> dict:
    return {**NEUTRAL, **DECODING[name]}


@pytest.mark.parametrize("stagger", [False, True], ids=["together", "joining"])
@pytest.mark.parametrize("decoding", ["greedy", "guarded", "chef"])
def test_batched_rows_write_what_generate_writes(random_llama, decoding, stagger, kind):
    model, tokenizer = random_llama
    engine = Engine(model, tokenizer, CAUSAL, batch_wait=0.05, engine=kind)
    assert engine.kind == kind
    try:
        ids = _encode(tokenizer, CAUSAL, PROMPTS)
        requests = [GenerationRequest([i], 40, _settings(decoding), seed=5) for i in ids]
        got = asyncio.run(_texts(engine, requests, stagger))
    finally:
        engine.close()
    expected = [generate_details(model, tokenizer, [p], CAUSAL, decoding, 40, seed=5)[0][0].text for p in PROMPTS]
    assert [g[0] for g in got] == expected
    assert len(set(expected)) == 3 and all(len(e) > 20 for e in expected)


def test_n_sampled_rows_are_generates_num_return_sequences(random_llama, kind):
    model, tokenizer = random_llama
    engine = Engine(model, tokenizer, CAUSAL, engine=kind)
    try:
        [ids] = _encode(tokenizer, CAUSAL, PROMPTS[:1])
        [got] = asyncio.run(_texts(engine, [GenerationRequest([ids], 30, _settings("sample"), n=3, seed=9)]))
    finally:
        engine.close()
    expected = [g.text for g in generate_details(model, tokenizer, PROMPTS[:1], CAUSAL, "sample", 30, 3, seed=9)[0]]
    assert got == expected and len(set(got)) == 3


@pytest.mark.parametrize("decoding", ["greedy", "sample", "beam"])
def test_a_seq2seq_model_writes_what_generate_writes(random_t5, decoding):
    model, tokenizer = random_t5
    engine = Engine(model, tokenizer, SEQ2SEQ)  # asks for the generation engine: a T5 falls back
    assert engine.kind == "transformers"
    try:
        ids = _encode(tokenizer, SEQ2SEQ, PROMPTS)
        requests = [GenerationRequest([i], 24, _settings(decoding), seed=3) for i in ids]
        got = asyncio.run(_texts(engine, requests))
    finally:
        engine.close()
    expected = [generate_details(model, tokenizer, [p], SEQ2SEQ, decoding, 24, seed=3)[0][0].text for p in PROMPTS]
    assert [g[0] for g in got] == expected


@pytest.fixture(scope="module")
def tiny_recipes(tmp_path_factory):
    from chef_genius.inference import load_run
    from tests.harness.tiny_server_model import shared_tiny_recipe_model

    loaded = load_run(shared_tiny_recipe_model(tmp_path_factory), device="cpu")
    return loaded.model, loaded.tokenizer


def test_a_full_queue_refuses_and_a_closed_stream_frees_its_place(tiny_recipes, kind):
    model, tokenizer = tiny_recipes
    engine = Engine(model, tokenizer, CAUSAL, max_queue=1, engine=kind)
    [endless] = _encode(tokenizer, CAUSAL, [ENDLESS])

    async def scenario():
        pieces = engine.submit(GenerationRequest([endless], 3000, _settings("greedy")))
        written = [await pieces.__anext__() for _ in range(5)]
        assert "la" in "".join(p.text for p in written) and engine.active_rows == 1
        with pytest.raises(EngineBusy):
            engine.submit(GenerationRequest([endless], 3, _settings("greedy")))
        await pieces.aclose()  # the client hangs up
        assert engine.load == 0
        start = time.monotonic()
        while engine.active_rows and time.monotonic() - start < 5:
            await asyncio.sleep(0.01)
        return time.monotonic() - start, await _texts(engine, [GenerationRequest([endless], 3, _settings("greedy"))])

    try:
        seconds, [[text]] = asyncio.run(scenario())
    finally:
        engine.close()
    assert engine.active_rows == 0 and seconds < 1.0  # its row left the batch (3000 tokens take several seconds)
    assert text.split() == ["la", "la", "la"]


def test_a_request_out_of_time_ends_with_a_timeout(tiny_recipes, kind):
    model, tokenizer = tiny_recipes
    engine = Engine(model, tokenizer, CAUSAL, timeout=0.3, engine=kind)
    [endless] = _encode(tokenizer, CAUSAL, [ENDLESS])

    async def scenario():
        start, reasons = time.monotonic(), []
        async for piece in engine.submit(GenerationRequest([endless], 3000, _settings("greedy"))):
            reasons.append(piece.finish_reason)
        return time.monotonic() - start, reasons

    try:
        seconds, reasons = asyncio.run(scenario())
    finally:
        engine.close()
    assert reasons[-1] == "timeout" and set(reasons[:-1]) == {None} and len(reasons) > 3
    assert 0.3 <= seconds < 1.5 and engine.load == 0


@pytest.mark.parametrize("decoding", ["greedy", "careful"])
def test_more_requests_than_slots_wait_for_free_ones(random_llama, kind, decoding):
    """Two slots, five requests sent at once and then one by one, with settings that differ per
    request (an OpenAI temperature next to the presets): each writes what `generate` writes alone."""
    model, tokenizer = random_llama
    engine = Engine(model, tokenizer, CAUSAL, max_rows=2, engine=kind, check_every=3)
    ids = _encode(tokenizer, CAUSAL, PROMPTS)
    custom = {**NEUTRAL, "do_sample": True, "temperature": 1.3, "top_p": 0.9, "top_k": 0}

    def requests() -> list[GenerationRequest]:
        return [*(GenerationRequest([i], 25 + 5 * k, _settings(decoding), seed=k) for k, i in enumerate(ids + ids[:1])),
                GenerationRequest([ids[1]], 20, custom, seed=4)]

    try:
        together = asyncio.run(_texts(engine, requests()))
        staggered = asyncio.run(_texts(engine, requests(), stagger=True))
    finally:
        engine.close()
    expected = [generate_details(model, tokenizer, [p], CAUSAL, decoding, 25 + 5 * k, seed=k)[0][0].text
                for k, p in enumerate(PROMPTS + PROMPTS[:1])]
    assert [g[0] for g in together[:4]] == [g[0] for g in staggered[:4]] == expected
    assert together[4] == staggered[4] and together[4][0]
    assert engine.load == 0 and engine.active_rows == 0


def test_a_request_with_more_rows_than_slots_is_answered(random_llama, kind):
    model, tokenizer = random_llama
    engine = Engine(model, tokenizer, CAUSAL, max_rows=2, engine=kind)
    try:
        [ids] = _encode(tokenizer, CAUSAL, PROMPTS[:1])
        [got] = asyncio.run(_texts(engine, [GenerationRequest([ids], 20, _settings("sample"), n=3, seed=9)]))
    finally:
        engine.close()
    expected = [g.text for g in generate_details(model, tokenizer, PROMPTS[:1], CAUSAL, "sample", 20, 3, seed=9)[0]]
    assert got == expected


def test_a_model_the_engine_does_not_support_falls_back(random_llama, capsys):
    model, tokenizer = random_llama
    model.config.model_type = "mistral"
    try:
        engine = Engine(model, tokenizer, CAUSAL)
    finally:
        model.config.model_type = "llama"
    engine.close()
    assert engine.kind == "transformers"
    assert "model type 'mistral' is not one the engine was proven on: decoding with transformers" in \
        capsys.readouterr().err
    with pytest.raises(ValueError, match="unknown serve engine 'vllm'"):
        Engine(model, tokenizer, CAUSAL, engine="vllm")


def test_checks_hold_usable_and_the_cookable_verdict():
    """``checks`` has one entry per verdict; cookable lists every check of `chef_genius.cookable`
    in order, with why the failed ones failed."""
    from chef_genius.cookable import CHECKS
    from chef_genius.recipe import parse_recipe
    from chef_genius.serve.checks import recipe_checks

    recipe = parse_recipe(RECIPE)
    checks = recipe_checks(recipe, ["pasta", "anchovies"], False)
    assert list(checks) == ["usable", "cookable"]
    assert checks["cookable"]["passed"] is False
    assert [r["check"] for r in checks["cookable"]["reasons"]] == list(CHECKS)
    failed = {r["check"]: r["detail"] for r in checks["cookable"]["reasons"] if not r["passed"]}
    assert failed["finished"] == "cut off at the token limit" and "anchovies" in failed["requested_foods"]
    usable = checks["usable"]
    assert usable["passed"] is False and usable["values"]["stopped"] is False
    assert [r["check"] for r in usable["reasons"] if not r["passed"]] == ["finished"]


def test_the_trace_has_a_line_per_request_in_time_order(random_llama, kind, tmp_path):
    """`serve --trace`: each ended request appends its seconds queued, to its first text and in
    all, in that order, to the file (lines already there are kept)."""
    model, tokenizer = random_llama
    trace = tmp_path / "trace.jsonl"
    trace.write_text('{"earlier": true}\n')
    engine = Engine(model, tokenizer, CAUSAL, engine=kind, trace=trace)
    try:
        ids = _encode(tokenizer, CAUSAL, PROMPTS)
        before = time.monotonic()
        asyncio.run(_texts(engine, [GenerationRequest([i], 20, _settings("greedy"), seed=100 + k)
                                    for k, i in enumerate(ids)]))
    finally:
        engine.close()
    after = time.monotonic()  # the worker has written every line (closed and joined)
    lines = [json.loads(line) for line in trace.read_text().splitlines()]
    assert lines[0] == {"earlier": True} and len(lines) == 1 + len(PROMPTS)
    # the seed joins a line to its request; submitted_at is this process's monotonic clock
    assert sorted(line["seed"] for line in lines[1:]) == [100 + k for k in range(len(PROMPTS))]
    for line in lines[1:]:
        assert before - 1e-5 <= line["submitted_at"] <= line["submitted_at"] + line["total_s"] <= after + 1e-5
        assert line["rows"] == 1 and line["max_tokens"] == 20
        assert 0 <= line["queued_s"] <= line["first_text_s"] <= line["total_s"] < 60
        assert line["handler_s"] is None  # submitted without an HTTP handler
        # the loop takes the first text after it was handed over (every piece is read here)
        assert line["first_out_s"] is not None and line["first_text_s"] <= line["first_out_s"] < 60


def test_an_unwritable_trace_loses_lines_not_requests(random_llama, kind, tmp_path):
    """The trace's folder removed while serving: requests are answered as ever, the lines dropped."""
    model, tokenizer = random_llama
    folder = tmp_path / "traces"
    folder.mkdir()
    engine = Engine(model, tokenizer, CAUSAL, engine=kind, trace=folder / "trace.jsonl")
    folder.rmdir()
    try:
        ids = _encode(tokenizer, CAUSAL, PROMPTS[:2])
        got = asyncio.run(_texts(engine, [GenerationRequest([i], 12, _settings("greedy")) for i in ids]))
        again = asyncio.run(_texts(engine, [GenerationRequest([ids[0]], 12, _settings("greedy"))]))
    finally:
        engine.close()
    assert len(got) == 2 and all(g[0] for g in got) and again[0] == got[0]
    assert not folder.exists()


@pytest.mark.parametrize("every", [1, 3])
def test_the_slot_loop_streams_every_check_every_steps(tiny_recipes, every):
    """`serve --stream-every N`: a row's text comes in pieces N tokens apart, the first of them its
    prefill's token alone (sent in the turn it was admitted, while the next turn's steps run), and
    the text is the Transformers path's whatever N is."""
    model, tokenizer = tiny_recipes
    [endless] = _encode(tokenizer, CAUSAL, [ENDLESS])  # a token of text each step

    async def pieces(kind: str, every: int) -> list:
        engine = Engine(model, tokenizer, CAUSAL, engine=kind, check_every=every)
        try:
            return [p async for p in engine.submit(GenerationRequest([endless], 20, _settings("greedy")))]
        finally:
            engine.close()

    got = asyncio.run(pieces("chef-genius", every))
    counts = [p.tokens for p in got if p.finish_reason is None]
    assert counts == list(range(1, 20, every)), counts
    assert got[-1].finish_reason == "length" and got[-1].tokens == 20
    reference = asyncio.run(pieces("transformers", 1))
    assert "".join(p.text for p in got) == "".join(p.text for p in reference)


@pytest.mark.parametrize("told", [True, False], ids=["captures-fail", "told-not-to-capture"])
def test_a_server_whose_prefill_captures_fail_prefills_eagerly(random_llama, monkeypatch, capsys, told):
    """A decoder whose prefill captures fail (out of memory, say: stood in for here) is let go for
    one that prefills eagerly, with one line on stderr, and the requests get what `generate` writes;
    `Engine(prefill_graphs=False)` makes that decoder at once."""
    from chef_genius.generation.slots import SlotDecoder

    made, warmed = [], []
    init, warm = SlotDecoder.__init__, SlotDecoder.warm_prefills

    def recording_init(self, *args, **kwargs):
        made.append(kwargs.get("prefill_graphs"))
        init(self, *args, **kwargs)

    def failing_warm(self, *args, **kwargs):
        warmed.append(self)
        if len(warmed) == 1 and made[0] is None:
            raise RuntimeError("CUDA out of memory (stood in for)")
        return warm(self, *args, **kwargs)

    monkeypatch.setattr(SlotDecoder, "__init__", recording_init)
    monkeypatch.setattr(SlotDecoder, "warm_prefills", failing_warm)
    model, tokenizer = random_llama
    engine = Engine(model, tokenizer, CAUSAL, engine="chef-genius", prefill_graphs=told)
    try:
        ids = _encode(tokenizer, CAUSAL, PROMPTS[:2])
        got = asyncio.run(_texts(engine, [GenerationRequest([i], 30, _settings("greedy")) for i in ids]))
    finally:
        engine.close()
    expected = [generate_details(model, tokenizer, [p], CAUSAL, "greedy", 30)[0][0].text for p in PROMPTS[:2]]
    assert [g[0] for g in got] == expected
    err = capsys.readouterr().err
    if told:
        assert made == [None, False] and len(warmed) == 2
        assert "prefills not captured (RuntimeError: CUDA out of memory (stood in for)); prefilling eagerly" in err
    else:
        assert made == [False] and len(warmed) == 1 and "prefills not captured" not in err
