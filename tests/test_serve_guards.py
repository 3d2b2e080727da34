"""`chef-genius serve`'s guards, as users meet them: an API key that guards the API and not the page,
a full queue's 503, a client gone that frees its place, a request out of time, no address beyond
loopback without a key, and bad serve options as one line; on both decoding paths."""

from __future__ import annotations

import socket
import subprocess
import sys
import time

import pytest

pytest.importorskip("fastapi", reason="chef-genius serve needs the serve extra (fastapi, uvicorn)")
httpx = pytest.importorskip("httpx")
openai = pytest.importorskip("openai", reason="the tests talk to the server with the official openai client")

from tests.harness.serve_process import post, running_server, serve_env, sse_events  # noqa: E402
from tests.harness.tiny_server_model import ENDLESS, RECIPE, shared_tiny_recipe_model  # noqa: E402

KEY = "test-key-0123456789"
ENGINES = ["chef-genius", "transformers"]  # both decoding paths serve a causal model


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory):
    return shared_tiny_recipe_model(tmp_path_factory)


@pytest.fixture(scope="module", params=ENGINES)
def guarded(tiny_model, request):
    with running_server(tiny_model, "--api-key", KEY, "--max-queue", "2", "--max-batch", "4",
                        "--max-tokens-cap", "4000", "--timeout", "4", f"--engine={request.param}") as running:
        yield running


def test_a_key_guards_the_api_not_the_page(guarded):
    assert httpx.get(guarded.url + "/v1/models").status_code == 401
    wrong = httpx.get(guarded.url + "/v1/models", headers={"Authorization": "Bearer " + KEY[:-1] + "X"})
    assert wrong.status_code == 401 and wrong.json()["error"]["code"] == "invalid_api_key"
    body = {"title": "Tomato Pasta", "max_tokens": 4}
    assert post(guarded, "/v1/recipes", body).status_code == 401
    assert post(guarded, "/v1/recipes", body, {"Authorization": f"Bearer {KEY}"}).status_code == 200
    keyed = openai.OpenAI(base_url=guarded.url + "/v1", api_key=KEY, max_retries=0)
    assert keyed.models.list().data[0].id == "tiny-recipes"
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=guarded.url + "/v1", api_key="nope", max_retries=0).models.list()
    assert httpx.get(guarded.url + "/").status_code == 200
    assert httpx.get(guarded.url + "/health").json()["auth"] is True


def _wait_for(server, field: str, value: int, seconds: float = 10) -> float:
    start = time.monotonic()
    while httpx.get(server.url + "/health").json()[field] != value and time.monotonic() - start < seconds:
        time.sleep(0.02)
    assert httpx.get(server.url + "/health").json()[field] == value
    return time.monotonic() - start


def test_a_full_queue_is_503_and_a_client_gone_frees_its_place(guarded):
    auth = {"Authorization": f"Bearer {KEY}"}
    endless = {"prompt": ENDLESS, "temperature": 0, "max_tokens": 4000, "stream": True}  # 5+ s of "la la"
    with httpx.Client(timeout=60, headers=auth) as a, httpx.Client(timeout=60, headers=auth) as b:
        streams = [c.stream("POST", guarded.url + "/v1/completions", json=endless) for c in (a, b)]
        responses = [s.__enter__() for s in streams]
        readers = [r.iter_lines() for r in responses]  # kept: a reader let go closes its response
        for response, lines in zip(responses, readers, strict=True):
            assert response.status_code == 200
            assert " la" in "".join(next(lines) for _ in range(12))  # writing has begun
        health = httpx.get(guarded.url + "/health").json()
        assert health["requests"] == 2 and health["rows"] == 2
        full = post(guarded, "/v1/completions", {"prompt": "hi", "max_tokens": 2}, auth)
        assert full.status_code == 503
        assert full.json()["error"] == {"message": full.json()["error"]["message"], "type": "server_busy",
                                        "param": None, "code": "queue_full"}
        assert "busy" in full.json()["error"]["message"]
        for stream in streams:  # both clients hang up mid-stream
            stream.__exit__(None, None, None)
    assert _wait_for(guarded, "rows", 0) < 2  # their rows left the batch (writing them takes 5+ s, the timeout 4 s)
    assert _wait_for(guarded, "requests", 0) < 2
    assert post(guarded, "/v1/completions", {"prompt": "hi", "max_tokens": 2}, auth).status_code == 200


def test_a_client_gone_before_a_plain_answer_frees_its_place_too(guarded):
    auth = {"Authorization": f"Bearer {KEY}"}
    with pytest.raises(httpx.ReadTimeout):  # the client gives up after 1 s and hangs up
        httpx.post(guarded.url + "/v1/completions", headers=auth, timeout=1.0,
                   json={"prompt": ENDLESS, "temperature": 0, "max_tokens": 4000})
    assert _wait_for(guarded, "rows", 0) < 2


def test_a_request_out_of_time_is_504(guarded):
    auth = {"Authorization": f"Bearer {KEY}"}
    start = time.monotonic()
    late = post(guarded, "/v1/chat/completions", {"messages": [{"role": "user", "content": ENDLESS}],
                                                  "temperature": 0, "max_tokens": 4000}, auth)
    assert late.status_code == 504 and 4 <= time.monotonic() - start < 8
    assert late.json()["error"] == {"message": "the request timed out after 4 s", "type": "timeout_error",
                                    "param": None, "code": "timeout"}
    with httpx.stream("POST", guarded.url + "/v1/recipes", headers=auth, timeout=30,
                      json={"title": ENDLESS, "max_tokens": 4000, "stream": True, "decoding": "greedy"}) as response:
        events = sse_events(response)
    assert all(e["type"] == "delta" for e in events[:-1]) and len(events) > 10
    assert events[-1]["error"]["code"] == "timeout" and "[DONE]" not in events


def _serve_cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "chef_genius", "serve", *args], capture_output=True, text=True,
                          timeout=120, env=serve_env(env))


def test_no_key_no_address_beyond_loopback(tiny_model):
    refused = _serve_cli(str(tiny_model), "--host", "0.0.0.0")  # the real command, in its own process
    assert refused.returncode == 2 and refused.stdout == ""
    assert refused.stderr.splitlines() == ["chef-genius: error: serve: --host 0.0.0.0 is not a loopback address: give "
                                           "an API key (--api-key KEY or CHEF_GENIUS_API_KEY) to serve beyond this "
                                           "machine"]


def _serve_main(capsys, *args: str) -> tuple[int, str]:
    from chef_genius.cli import main

    code = main(["serve", *args])
    return code, capsys.readouterr().err


def test_bad_serve_options_are_one_line(tiny_model, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("CHEF_GENIUS_API_KEY", raising=False)
    for host in ("::", "192.168.1.20", "example.com"):
        code, err = _serve_main(capsys, str(tiny_model), "--host", host)
        assert code == 2 and err.startswith(f"chef-genius: error: serve: --host {host} is not a loopback")
    monkeypatch.setenv("CHEF_GENIUS_API_KEY", "abc")
    code, err = _serve_main(capsys, str(tiny_model), "--host", "0.0.0.0")
    assert code == 2 and "shorter than 8" in err
    monkeypatch.delenv("CHEF_GENIUS_API_KEY")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        cases = [(["--port", "70000"], "is not a port"), (["--port", port], "cannot listen on 127.0.0.1"),
                 (["--max-queue", "0"], "--max-queue must be positive"),
                 (["--stream-every", "0"], "--stream-every must be positive"),
                 (["--max-tokens", "2000"], "over --max-tokens-cap"), (["--timeout", "0"], "--timeout must"),
                 (["--trace", str(tmp_path)], "--trace"), (["--trace", str(tmp_path / "no" / "t.jsonl")], "--trace")]
        for args, expected in cases:
            code, err = _serve_main(capsys, str(tiny_model), *args)
            assert code == 2 and expected in err and len(err.strip().splitlines()) == 1, err
    code, err = _serve_main(capsys, str(tmp_path / "nothing-here"), "--port", "0")
    assert code == 2 and "no such run" in err and len(err.strip().splitlines()) == 1
    for value in ("fast", "0", "2"):  # the GIL's switch interval, in seconds (0, 1]
        monkeypatch.setenv("CHEF_GENIUS_SWITCH_INTERVAL", value)
        code, err = _serve_main(capsys, str(tiny_model), "--port", "0")
        assert code == 2 and "CHEF_GENIUS_SWITCH_INTERVAL" in err and len(err.strip().splitlines()) == 1, err


def test_loopback_addresses():
    from chef_genius.serve.server import is_loopback

    assert all(is_loopback(h) for h in ("127.0.0.1", "127.5.0.1", "::1", "[::1]", "localhost", "LOCALHOST"))
    assert not any(is_loopback(h) for h in ("0.0.0.0", "::", "10.0.0.1", "192.168.1.2", "example.com", ""))


def test_a_gguf_file_is_served_as_its_model_folder(tmp_path, monkeypatch):
    from chef_genius.serve.server import model_source
    from tests.harness.tiny_causal import write_tiny_gguf

    monkeypatch.setenv("CHEF_GENIUS_CACHE", str(tmp_path / "cache"))
    gguf = write_tiny_gguf(tmp_path / "SmolLM2-tiny.Q8.gguf", [RECIPE])
    folder, name = model_source(gguf)
    assert name == "SmolLM2-tiny.Q8" and (folder / "config.json").is_file() and folder.is_relative_to(tmp_path)
    assert model_source(tmp_path / "runs" / "soup" / "final") == (tmp_path / "runs" / "soup" / "final", "soup")


def test_the_switch_interval_is_read_from_the_environment(monkeypatch):
    """CHEF_GENIUS_SWITCH_INTERVAL: seconds for `sys.setswitchinterval`; unset or empty: Python's own."""
    from chef_genius.errors import UserError
    from chef_genius.serve.server import switch_interval

    monkeypatch.delenv("CHEF_GENIUS_SWITCH_INTERVAL", raising=False)
    assert switch_interval() is None
    for value, seconds in (("", None), ("0.0005", 0.0005), ("1", 1.0)):
        monkeypatch.setenv("CHEF_GENIUS_SWITCH_INTERVAL", value)
        assert switch_interval() == seconds
    for value in ("nan", "inf", "-0.001", "0"):
        monkeypatch.setenv("CHEF_GENIUS_SWITCH_INTERVAL", value)
        with pytest.raises(UserError, match="CHEF_GENIUS_SWITCH_INTERVAL"):
            switch_interval()


def test_the_fused_step_is_on_by_default_and_can_be_turned_off():
    """serve decodes a plain Llama through the fused step unless told not to (on an H100 it gave
    10.2k tokens/s against the plain step's 8.4k); the compiled step stays a choice."""
    from chef_genius.cli.parser import _parser

    parser = _parser()
    default = parser.parse_args(["serve", "run"])
    assert default.fused_step is True and default.compile_step is False
    assert parser.parse_args(["serve", "run", "--no-fused-step"]).fused_step is False
    assert parser.parse_args(["serve", "run", "--compile-step"]).compile_step is True
