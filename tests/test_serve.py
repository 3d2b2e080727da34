"""`chef-genius serve` as users meet it: a server process on a free port, the official `openai`
client, raw HTTP for the recipe endpoint and for every kind of bad input, 64 requests at once;
on both decoding paths (`--engine chef-genius`, the default, and `--engine transformers`). Its
guards (key, queue, time-outs, options): test_serve_guards.py."""

from __future__ import annotations

import concurrent.futures
import statistics
import time

import pytest

from chef_genius.families import CAUSAL

pytest.importorskip("fastapi", reason="chef-genius serve needs the serve extra (fastapi, uvicorn)")
httpx = pytest.importorskip("httpx")
openai = pytest.importorskip("openai", reason="the tests talk to the server with the official openai client")

from chef_genius.config_schema import SEED_TEMPLATES  # noqa: E402
from tests.harness.serve_process import post, running_server, sse_events  # noqa: E402
from tests.harness.tiny_server_model import RECIPE, shared_tiny_recipe_model  # noqa: E402

ERROR_KEYS = {"message", "type", "param", "code"}


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory):
    return shared_tiny_recipe_model(tmp_path_factory)


ENGINES = ["chef-genius", "transformers"]  # both decoding paths serve a causal model


@pytest.fixture(scope="module", params=ENGINES)
def server(tiny_model, request):
    with running_server(tiny_model, "--decoding", "greedy", f"--engine={request.param}") as running:
        running.engine = request.param
        yield running


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0, timeout=120)




def test_models_and_health(server, client):
    assert [m.id for m in client.models.list().data] == ["tiny-recipes"]
    health = httpx.get(server.url + "/health").json()
    assert health["status"] == "ok" and health["auth"] is False and health["capacity"] == 256
    assert health["engine"] == server.engine and any(f"(engine {server.engine}," in line for line in server.lines)


def test_chat_answers_as_generate_does(server, client, tiny_model):
    from chef_genius.inference import generate, load_run

    prompt = "Create a recipe: Tomato Pasta"
    reply = client.chat.completions.create(model="tiny-recipes", messages=[{"role": "user", "content": prompt}],
                                           temperature=0, max_tokens=200)
    loaded = load_run(tiny_model, device="cpu")
    expected = generate(loaded.model, loaded.tokenizer, [prompt], CAUSAL, "greedy", 200)[0][0]
    assert reply.choices[0].message.content == expected == RECIPE
    assert reply.choices[0].finish_reason == "stop" and reply.object == "chat.completion"
    encoded = loaded.tokenizer(RECIPE, add_special_tokens=False)["input_ids"]
    assert reply.usage.completion_tokens == len(encoded)
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + reply.usage.completion_tokens


def test_chat_streams_the_same_text(client):
    messages = [{"role": "system", "content": "You write recipes."},
                {"role": "user", "content": "Create a recipe: Tomato Pasta"}]
    whole = client.chat.completions.create(model="x", messages=messages, temperature=0, max_tokens=200)
    chunks = list(client.chat.completions.create(model="x", messages=messages, temperature=0, max_tokens=200,
                                                 stream=True, stream_options={"include_usage": True}))
    pieces = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    assert len(pieces) > 20  # written token by token, not in one piece
    assert "".join(pieces) == whole.choices[0].message.content
    assert chunks[0].choices[0].delta.role == "assistant"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].usage.completion_tokens == whole.usage.completion_tokens


def test_n_choices_sampled_with_a_seed(client):
    ask = {"model": "x", "messages": [{"role": "user", "content": "hello"}], "temperature": 1.8, "max_tokens": 24,
           "n": 3}
    first = client.chat.completions.create(seed=11, **ask)
    again = client.chat.completions.create(seed=11, **ask)
    assert sorted(c.index for c in first.choices) == [0, 1, 2]
    assert [c.message.content for c in first.choices] == [c.message.content for c in again.choices]
    assert len({c.message.content for c in first.choices}) > 1  # three samples, not one copied
    others = [client.chat.completions.create(seed=s, **ask).choices[0].message.content for s in (12, 13)]
    assert any(o != first.choices[0].message.content for o in others)
    streamed = list(client.chat.completions.create(seed=11, stream=True, **ask))
    by_index = {i: "".join(c.choices[0].delta.content or "" for c in streamed
                           if c.choices and c.choices[0].index == i) for i in range(3)}
    assert [by_index[i] for i in range(3)] == [c.message.content for c in first.choices]


def test_completions_one_prompt_and_a_list(client):
    one = client.completions.create(model="x", prompt="Create a recipe: Tomato Pasta", temperature=0, max_tokens=200)
    assert one.choices[0].text == RECIPE and one.choices[0].finish_reason == "stop"
    many = client.completions.create(model="x", prompt=["Create a recipe: Tomato Pasta", "Create a recipe: Bean Stew"],
                                     n=2, temperature=0, max_tokens=5)
    assert [c.index for c in many.choices] == [0, 1, 2, 3]
    assert all(c.finish_reason == "length" and c.text.startswith("Title") for c in many.choices)
    assert many.usage.completion_tokens == 4 * 5
    streamed = "".join(c.choices[0].text for c in client.completions.create(
        model="x", prompt="Create a recipe: Tomato Pasta", temperature=0, max_tokens=200, stream=True))
    assert streamed == RECIPE


def test_the_recipe_endpoint_builds_the_training_prompt_and_checks_the_recipe(server):
    from chef_genius.augment import canonical_prompt

    answer = post(server, "/v1/recipes", {"title": "Tomato Pasta", "ingredients": "2 cups pasta\ntomatoes, basil",
                                          "decoding": "greedy", "max_tokens": 200})
    assert answer.status_code == 200, answer.text
    result = answer.json()
    assert result["prompt"] == canonical_prompt(SEED_TEMPLATES, "Tomato Pasta", ["pasta", "tomatoes", "basil"])
    assert result["prompt"] == "Create a recipe: Tomato Pasta with tomatoes, basil"
    assert result["text"] == RECIPE and result["finish_reason"] == "stop"
    assert result["recipe"] == {"title": "Tomato Pasta", "ingredients": ["200 g pasta", "2 ripe tomatoes",
                                                                        "1 tbsp olive oil", "6 basil leaves"],
                                "steps": ["Boil the pasta in salted water until tender.",
                                          "Chop the tomatoes and warm them in the olive oil.",
                                          "Toss the pasta with the tomatoes and tear the basil over it."]}
    usable = result["checks"]["usable"]
    assert usable["passed"] is True and len(usable["reasons"]) == 6 and all(r["passed"] for r in usable["reasons"])
    assert usable["values"]["ingredients_used"] == 1.0
    assert isinstance(result["checks"]["cookable"]["passed"], bool) and result["checks"]["cookable"]["reasons"]
    assert result["decoding"]["preset"] == "greedy" and result["decoding"]["max_tokens"] == 200
    assert result["decoding"]["settings"]["do_sample"] is False
    assert result["markdown"].startswith("# Tomato Pasta\n") and "3. Toss the pasta" in result["markdown"]
    # Foods alone, and notes added as training adds a tip.
    foods = post(server, "/v1/recipes", {"ingredients": ["pasta", "tomatoes"], "notes": "Use fresh basil."}).json()
    assert foods["prompt"] == "Create a recipe: a dish with pasta and tomatoes. Tip: Use fresh basil."
    assert foods["decoding"]["preset"] == "greedy"  # the server's --decoding


def test_a_cut_recipe_is_not_usable_and_says_why(server):
    result = post(server, "/v1/recipes", {"title": "Tomato Pasta", "max_tokens": 30, "decoding": "greedy"}).json()
    assert result["finish_reason"] == "length" and result["usage"]["completion_tokens"] == 30
    usable = result["checks"]["usable"]
    assert usable["passed"] is False
    failed = {r["check"]: r["detail"] for r in usable["reasons"] if not r["passed"]}
    assert failed["finished"] == "cut off at the token limit" and "steps" in failed


def test_the_recipe_streams_then_comes_parsed(server):
    with httpx.stream("POST", server.url + "/v1/recipes", json={"title": "Tomato Pasta", "stream": True,
                                                                "decoding": "guarded"}, timeout=120) as response:
        assert response.status_code == 200 and response.headers["content-type"].startswith("text/event-stream")
        events = sse_events(response)
    assert events[-1] == "[DONE]"
    deltas = [e["text"] for e in events[:-2]]
    assert all(e["type"] == "delta" for e in events[:-2]) and len(deltas) > 20
    final = events[-2]
    assert final["type"] == "recipe" and final["text"] == "".join(deltas) == RECIPE
    assert final["recipe"]["title"] == "Tomato Pasta" and final["checks"]["usable"]["passed"] is True
    assert final["decoding"]["preset"] == "guarded" and final["decoding"]["settings"]["no_repeat_ngram_size"] == 8


def test_recipe_best_of_answers_one_of_n_candidates(server):
    greedy = {"title": "Tomato Pasta", "max_tokens": 30, "decoding": "greedy"}
    single = post(server, "/v1/recipes", greedy).json()
    best = post(server, "/v1/recipes", {**greedy, "best_of": 3}).json()  # three equal candidates: the same answer
    assert best["decoding"]["best_of"] == 3 and single["decoding"]["best_of"] == 1
    assert best["text"] == single["text"] and best["checks"] == single["checks"]
    sampled = post(server, "/v1/recipes", {"title": "Tomato Pasta", "max_tokens": 30, "decoding": "sample",
                                           "best_of": 3, "seed": 5})
    assert sampled.status_code == 200 and set(sampled.json()["checks"]) == {"usable", "cookable"}
    refused = post(server, "/v1/recipes", {"title": "Tomato Pasta", "best_of": 2, "stream": True})
    assert refused.status_code == 400 and refused.json()["error"]["param"] == "best_of"
    assert post(server, "/v1/recipes", {"title": "Tomato Pasta", "best_of": 0}).status_code == 400


def test_beam_search_gives_generates_recipe(server):
    result = post(server, "/v1/recipes", {"title": "Tomato Pasta", "decoding": "beam"}).json()
    assert result["text"] == RECIPE and result["decoding"]["settings"]["num_beams"] == 4


LONG = "word " * 3000  # under the character limit, over the token limit
BAD = [
    ("/v1/chat/completions", b"{", "invalid_json", None),
    ("/v1/chat/completions", b"", "invalid_json", None),
    ("/v1/chat/completions", b"[1, 2]", "invalid_json", None),
    ("/v1/chat/completions", b'{"messages": [{"role": "user", "content": "caf\xe9"}]}', "invalid_encoding", None),
    ("/v1/chat/completions", {}, "missing_field", "messages"),
    ("/v1/chat/completions", {"messages": []}, "invalid_value", "messages"),
    ("/v1/chat/completions", {"messages": "hello"}, "invalid_value", "messages"),
    ("/v1/chat/completions", {"messages": [{"role": "wizard", "content": "hi"}]}, "invalid_value",
     "messages.0.role"),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": 5}]}, "invalid_value", "messages.0.content"),
    ("/v1/chat/completions", {"messages": [{"role": "user"}]}, "missing_field", "messages.0.content"),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "  "}]}, "empty_prompt", "messages"),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "x" * 20_000}]}, "prompt_too_long",
     "messages.0.content"),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": LONG}]}, "prompt_too_long", "messages"),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}], "temperature": "hot"},
     "invalid_value", "temperature"),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}], "temperature": 3}, "invalid_value",
     "temperature"),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}], "top_p": 0}, "invalid_value", "top_p"),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 1_000_000},
     "invalid_value", "max_tokens"),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 0}, "invalid_value",
     "max_tokens"),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}], "max_tokens": True}, "invalid_value",
     "max_tokens"),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}], "n": 100}, "invalid_value", "n"),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}], "stream": "yes"}, "invalid_value",
     "stream"),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}], "seed": 1.5}, "invalid_value", "seed"),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}], "stop": ["\n"]},
     "unsupported_parameter", "stop"),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}], "decoding": "wild"}, "invalid_value",
     "decoding"),
    ("/v1/completions", {"prompt": ""}, "empty_prompt", "prompt"),
    ("/v1/completions", {"prompt": 123}, "invalid_value", "prompt"),
    ("/v1/completions", {"prompt": []}, "invalid_value", "prompt"),
    ("/v1/completions", {"prompt": ["fine", 7]}, "invalid_value", "prompt.1"),
    ("/v1/completions", {"max_tokens": 5}, "missing_field", "prompt"),
    ("/v1/completions", {"prompt": LONG}, "prompt_too_long", "prompt"),
    ("/v1/completions", {"prompt": ["a"] * 9, "n": 2}, "invalid_value", "n"),
    ("/v1/recipes", {}, "missing_field", "title"),
    ("/v1/recipes", {"title": " ", "ingredients": ""}, "missing_field", "title"),
    ("/v1/recipes", {"title": 5}, "invalid_value", "title"),
    ("/v1/recipes", {"title": "Soup", "ingredients": {"a": 1}}, "invalid_value", "ingredients"),
    ("/v1/recipes", {"title": "Soup", "decoding": "nope"}, "invalid_value", "decoding"),
    ("/v1/recipes", {"title": "Soup", "seed": "x"}, "invalid_value", "seed"),
    ("/v1/recipes", {"title": "Soup", "max_tokens": -1}, "invalid_value", "max_tokens"),
    ("/v1/recipes", {"title": "x" * 20_000}, "prompt_too_long", "title"),
]


@pytest.mark.parametrize(("path", "body", "code", "param"), BAD, ids=[f"{p.split('/')[-1]}-{c}-{i}" for i, (p, _, c, _)
                                                                    in enumerate(BAD)])
def test_bad_input_is_a_4xx_in_openais_shape(server, path, body, code, param):
    answer = post(server, path, body)
    assert answer.status_code == 400, answer.text
    error = answer.json()["error"]
    assert set(error) == ERROR_KEYS and error["type"] == "invalid_request_error"
    assert error["code"] == code and error["param"] == param and error["message"]
    assert "Traceback" not in answer.text


def test_other_bad_requests_are_4xx_too(server):
    huge = post(server, "/v1/completions", b'{"prompt": "' + b"a" * 300_000 + b'"}')
    assert huge.status_code == 413 and huge.json()["error"]["code"] == "request_too_large"
    missing = httpx.get(server.url + "/v1/nothing")
    assert missing.status_code == 404 and set(missing.json()["error"]) == ERROR_KEYS
    wrong_method = httpx.get(server.url + "/v1/chat/completions")
    assert wrong_method.status_code == 405 and set(wrong_method.json()["error"]) == ERROR_KEYS
    for name in ("../../pyproject.toml", "..%2F..%2Fapp.py", "index.html"):
        assert httpx.get(f"{server.url}/static/{name}").status_code == 404
    assert httpx.get(server.url + "/health").json()["requests"] == 0  # nothing stuck after all the bad input


def test_the_page_and_its_files_come_from_the_package(server):
    page = httpx.get(server.url + "/")
    assert page.status_code == 200 and '<option value="greedy" selected>greedy</option>' in page.text
    assert "default-src 'self'" in page.headers["content-security-policy"]
    assert "http://" not in page.text and "https://" not in page.text  # nothing from the network
    for name, kind in (("app.js", "text/javascript"), ("style.css", "text/css"), ("icon.svg", "image/svg+xml")):
        asset = httpx.get(f"{server.url}/static/{name}")
        assert asset.status_code == 200 and asset.headers["content-type"].startswith(kind) and asset.content
        assert "https://" not in asset.text
    assert "@media print" in httpx.get(server.url + "/static/style.css").text


def test_64_concurrent_requests_are_all_answered(server):
    def one(i: int) -> tuple[float, dict]:
        start = time.perf_counter()
        answer = post(server, "/v1/chat/completions", {"messages": [{"role": "user", "content": f"Soup {i}"}],
                                                       "temperature": 0, "max_tokens": 32})
        assert answer.status_code == 200, answer.text
        return time.perf_counter() - start, answer.json()

    start = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(64) as pool:
        results = list(pool.map(one, range(64)))
    wall = time.perf_counter() - start
    latencies = sorted(r[0] for r in results)
    assert len(results) == 64
    assert all(r[1]["choices"][0]["message"]["content"].startswith("Title") for r in results)
    assert sum(r[1]["usage"]["completion_tokens"] for r in results) == 64 * 32
    p50, p95 = statistics.median(latencies), latencies[int(0.95 * 63)]
    print(f"\n64 concurrent requests: wall {wall:.2f} s, p50 {p50:.2f} s, p95 {p95:.2f} s")
    assert p95 < 60
    assert httpx.get(server.url + "/health").json()["requests"] == 0
