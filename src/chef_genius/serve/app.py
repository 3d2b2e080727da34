"""The HTTP side of `chef-genius serve`: OpenAI-compatible endpoints, the recipe endpoint, the page.

Every error is JSON in OpenAI's shape (`schemas.ApiError`), never a traceback. Endpoints under
/v1 need ``Authorization: Bearer KEY`` when the server has a key (compared in constant time);
the page and /health do not (the page asks for the key when the server wants one).
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import sys
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from starlette.exceptions import HTTPException

from chef_genius.augment import with_reference
from chef_genius.serve.engine import Engine, EngineBusy
from chef_genius.serve.pieces import GenerationRequest, Piece
from chef_genius.serve.prompts import (
    Limits,
    decoding_settings,
    encode_messages,
    encode_prompts,
    max_tokens,
    recipe_prompt,
)
from chef_genius.serve.schemas import ApiError, ChatRequest, CompletionRequest, RecipeRequest, read_body


@dataclass
class ServeConfig:
    model_id: str
    templates: list[str]
    default_decoding: str = "careful"
    api_key: str | None = None
    max_body_bytes: int = 256 * 1024
    limits: Limits = field(default_factory=Limits)
    references: object | None = None  # a run trained with data.reference: its `retrieval.References`


class _Gone(Exception):
    """The client closed the connection before its answer."""


def _sse(data) -> bytes:
    return f"data: {data if isinstance(data, str) else json.dumps(data, ensure_ascii=False)}\n\n".encode()


async def _collect(pieces: AsyncIterator[Piece], rows: int, request: Request) -> tuple[list[str], list, list[int]]:
    """Each row's text, finish reason and tokens; a client gone meanwhile cancels the rows."""
    texts, reasons, tokens = [""] * rows, [None] * rows, [0] * rows
    iterator = pieces.__aiter__()
    checked = time.monotonic()
    try:
        while True:
            step = asyncio.ensure_future(iterator.__anext__())
            while not (await asyncio.wait({step}, timeout=0.5))[0] or time.monotonic() - checked > 0.5:
                checked = time.monotonic()
                if await request.is_disconnected():
                    step.cancel()
                    with contextlib.suppress(BaseException):
                        await step  # the generator's own clean-up runs: its rows are cancelled
                    raise _Gone()
            try:
                piece = step.result()
            except StopAsyncIteration:
                return texts, reasons, tokens
            _raise_for(piece)
            texts[piece.index] += piece.text
            if piece.finish_reason:
                reasons[piece.index], tokens[piece.index] = piece.finish_reason, piece.tokens
    finally:
        await iterator.aclose()


def _failure(piece: Piece) -> ApiError:
    if piece.finish_reason == "timeout":
        return ApiError(504, piece.text, "timeout_error", code="timeout")
    return ApiError(500, piece.text, "server_error", code="generation_failed")


def _raise_for(piece: Piece) -> None:
    if piece.finish_reason in ("timeout", "error"):
        raise _failure(piece)


def create_app(engine: Engine, tokenizer, family, config: ServeConfig) -> FastAPI:
    from chef_genius.inference import DECODING
    from chef_genius.recipe import parse_recipe, to_dict, to_markdown
    from chef_genius.serve.checks import recipe_checks
    from chef_genius.serve.page import asset, index_html

    app = FastAPI(title="chef-genius", docs_url=None, redoc_url=None, openapi_url=None)
    limits = config.limits

    @app.exception_handler(ApiError)
    async def _api_error(_, error: ApiError):
        return JSONResponse(error.body(), status_code=error.status)

    @app.exception_handler(HTTPException)
    async def _http_error(_, error: HTTPException):
        kind = "not_found_error" if error.status_code == 404 else "invalid_request_error"
        return JSONResponse(ApiError(error.status_code, str(error.detail), kind).body(), status_code=error.status_code)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_, error: RequestValidationError):
        return JSONResponse(ApiError(400, "the request is not valid").body(), status_code=400)

    @app.exception_handler(_Gone)
    async def _gone(_, error: _Gone):
        return Response(status_code=499)

    @app.exception_handler(Exception)
    async def _server_error(_, error: Exception):
        print(f"chef-genius serve: {type(error).__name__}: {error}", file=sys.stderr)
        return JSONResponse(ApiError(500, "internal server error", "server_error").body(), status_code=500)

    def authorize(request: Request) -> None:
        if not config.api_key:
            return
        given = request.headers.get("authorization", "")
        scheme, _, token = given.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), config.api_key.encode()):
            raise ApiError(401, "a valid API key is needed: Authorization: Bearer KEY", code="invalid_api_key")

    def submit(generation: GenerationRequest, request: Request) -> AsyncIterator[Piece]:
        try:
            return engine.submit(generation, getattr(request.state, "received", None))
        except EngineBusy as error:
            raise ApiError(503, str(error), "server_busy", code="queue_full") from None

    def rows_allowed(n: int, prompts: int = 1) -> None:
        if n > limits.max_n or n * prompts > 2 * limits.max_n:
            raise ApiError(400, f"n: at most {limits.max_n} choices, {2 * limits.max_n} in all", param="n",
                           code="invalid_value")

    def streaming(events: AsyncIterator[bytes]) -> StreamingResponse:
        return StreamingResponse(events, media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    def usage(prompt_tokens: int, completion_tokens: int) -> dict:
        return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens}

    async def openai_answer(request: Request, body, prompts: list[list[int]], chat: bool) -> Response:
        rows_allowed(body.n, len(prompts))
        _, settings = decoding_settings(body.decoding, config.default_decoding, body.temperature, body.top_p)
        generation = GenerationRequest(prompts, max_tokens(body.max_tokens or body.max_completion_tokens, limits),
                                       settings, body.n, body.seed)
        pieces = submit(generation, request)
        kind = "chat.completion" if chat else "text_completion"
        head = {"id": f"{'chatcmpl' if chat else 'cmpl'}-{uuid.uuid4().hex}", "created": int(time.time()),
                "model": config.model_id}
        prompt_tokens = sum(len(p) for p in prompts)
        if not body.stream:
            texts, reasons, tokens = await _collect(pieces, generation.rows, request)
            choices = [{"index": i, "message": {"role": "assistant", "content": t}, "finish_reason": r,
                        "logprobs": None} if chat else {"index": i, "text": t, "finish_reason": r, "logprobs": None}
                       for i, (t, r) in enumerate(zip(texts, reasons, strict=True))]
            return JSONResponse({**head, "object": kind, "choices": choices,
                                 "usage": usage(prompt_tokens, sum(tokens))})

        def chunk(index: int, text: str | None, reason: str | None, role: bool = False) -> dict:
            choice = ({"index": index, "delta": ({"role": "assistant", "content": ""} if role else
                                                 ({"content": text} if text is not None else {})),
                       "finish_reason": reason, "logprobs": None} if chat else
                      {"index": index, "text": text or "", "finish_reason": reason, "logprobs": None})
            return {**head, "object": f"{kind}.chunk" if chat else kind, "choices": [choice]}

        async def events() -> AsyncIterator[bytes]:
            total = 0
            if chat:
                for index in range(generation.rows):
                    yield _sse(chunk(index, None, None, role=True))
            async for piece in pieces:
                if piece.finish_reason in ("timeout", "error"):
                    yield _sse(_failure(piece).body())
                    return
                if piece.text:
                    yield _sse(chunk(piece.index, piece.text, None))
                if piece.finish_reason:
                    total += piece.tokens
                    yield _sse(chunk(piece.index, None, piece.finish_reason))
            if body.include_usage:
                yield _sse({**head, "object": f"{kind}.chunk" if chat else kind, "choices": [],
                            "usage": usage(prompt_tokens, total)})
            yield _sse("[DONE]")

        return streaming(events())

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request):
        request.state.received = time.monotonic()  # serve --trace: handler_s
        authorize(request)
        body = await read_body(request, ChatRequest, config.max_body_bytes)
        ids = encode_messages(tokenizer, family, body.messages, limits)
        return await openai_answer(request, body, [ids], chat=True)

    @app.post("/v1/completions")
    async def completions(request: Request):
        request.state.received = time.monotonic()  # serve --trace: handler_s
        authorize(request)
        body = await read_body(request, CompletionRequest, config.max_body_bytes)
        rows_allowed(body.n, len(body.prompts))
        return await openai_answer(request, body, encode_prompts(tokenizer, family, body.prompts, limits), chat=False)

    @app.post("/v1/recipes")
    async def recipes(request: Request):
        request.state.received = time.monotonic()  # serve --trace: handler_s
        authorize(request)
        body = await read_body(request, RecipeRequest, config.max_body_bytes)
        prompt, foods = recipe_prompt(config.templates, body.title, body.ingredient_items, body.notes)
        ids = encode_prompts(tokenizer, family, [prompt], limits, "title")[0]
        reference = None
        if config.references is not None:  # the recipe endpoint prompts as the run trained; the OpenAI ones are raw
            reference = config.references.for_requests([body.title], [foods])[0]
            if reference:  # cut, as training cuts a prompt: the reference's tail goes first
                ids = family.encode_sources(tokenizer, [with_reference(prompt, reference)], limits.max_prompt_tokens)[0]
        name, settings = decoding_settings(body.decoding, config.default_decoding)
        limit = max_tokens(body.max_tokens, limits)
        n = body.best_of
        if n > 1 and body.stream:
            raise ApiError(400, "best_of: the best recipe is known only when all are written; use it without stream",
                           param="best_of", code="invalid_value")
        rows_allowed(n)
        pieces = submit(GenerationRequest([ids], limit, settings, n, body.seed), request)
        head = {"id": f"recipe-{uuid.uuid4().hex}", "object": "recipe", "created": int(time.time()),
                "model": config.model_id, "prompt": prompt,
                **({"reference": reference} if reference else {})}

        def result(text: str, reason: str, tokens: int) -> dict:
            recipe = parse_recipe(text)
            return {**head, "text": text, "recipe": to_dict(recipe), "markdown": to_markdown(recipe),
                    "checks": recipe_checks(recipe, foods, stopped=reason == "stop"),
                    "decoding": {"preset": name, "settings": settings, "max_tokens": limit, "seed": body.seed,
                                 "best_of": n},
                    "finish_reason": reason, "usage": usage(len(ids), tokens)}

        if not body.stream:
            texts, reasons, tokens = await _collect(pieces, n, request)
            answers = [result(t, r, k) for t, r, k in zip(texts, reasons, tokens, strict=True)]
            # best-of-N as `chef_genius.best_of` ranks: cookable, fewest failed checks, usable (then sampling order)
            return JSONResponse(max(answers, key=lambda a: (
                a["checks"]["cookable"]["passed"], -sum(not r["passed"] for r in a["checks"]["cookable"]["reasons"]),
                a["checks"]["usable"]["passed"], -answers.index(a))))

        async def events() -> AsyncIterator[bytes]:
            text = ""
            async for piece in pieces:
                if piece.finish_reason in ("timeout", "error"):
                    yield _sse(_failure(piece).body())
                    return
                text += piece.text
                if piece.text:
                    yield _sse({"type": "delta", "text": piece.text})
                if piece.finish_reason:
                    yield _sse({"type": "recipe", **result(text, piece.finish_reason, piece.tokens)})
            yield _sse("[DONE]")

        return streaming(events())

    @app.get("/v1/models")
    async def models(request: Request):
        authorize(request)
        return {"object": "list", "data": [{"id": config.model_id, "object": "model", "created": 0,
                                            "owned_by": "chef-genius"}]}

    @app.get("/health")
    async def health():
        return {"status": "ok", "model": config.model_id, "device": str(engine.device), "engine": engine.kind,
                "requests": engine.load,
                "rows": engine.active_rows, "capacity": engine.capacity, "generated_tokens": engine.generated_tokens,
                "auth": bool(config.api_key)}

    @app.get("/")
    async def page():
        return HTMLResponse(index_html(DECODING, config.default_decoding), headers=_PAGE_HEADERS)

    @app.get("/static/{name}")
    async def static(name: str):
        body, media_type = asset(name)
        return Response(body, media_type=media_type, headers=_PAGE_HEADERS)

    return app


_PAGE_HEADERS = {"Content-Security-Policy": "default-src 'self'; img-src 'self' data:; base-uri 'none'; "
                                            "form-action 'self'; frame-ancestors 'none'",
                 "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer"}
