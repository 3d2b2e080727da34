"""Request bodies of the server's endpoints, read strictly, and errors in OpenAI's shape.

Every body is read by `read_body`: at most ``max_bytes`` (413), UTF-8 (400), JSON (400), an
object of the endpoint's schema (400, naming the field in ``param``). Types are strict: a string
is not a number and ``true`` is not 1. Unknown fields are ignored, as OpenAI's clients send
fields a server may not use; fields whose meaning this server cannot honour (``stop``, ``logprobs``,
``tools``...) are refused rather than silently ignored.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator


class ApiError(Exception):
    """An error answered as ``{"error": {"message", "type", "param", "code"}}``."""

    def __init__(self, status: int, message: str, kind: str = "invalid_request_error", param: str | None = None,
                 code: str | None = None):
        super().__init__(message)
        self.status, self.message, self.kind, self.param, self.code = status, message, kind, param, code

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.kind, "param": self.param, "code": self.code}}


class Strict(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore")


Temperature = Annotated[float, Field(ge=0.0, le=2.0)]
TopP = Annotated[float, Field(gt=0.0, le=1.0)]
NOT_SUPPORTED = ("stop", "logprobs", "top_logprobs", "tools", "functions", "tool_choice", "response_format",
                 "logit_bias", "suffix", "echo", "best_of")


class Sampling(Strict):
    """What the OpenAI endpoints share."""

    model: str | None = None
    temperature: Temperature | None = None
    top_p: TopP | None = None
    max_tokens: Annotated[int, Field(ge=1)] | None = None
    max_completion_tokens: Annotated[int, Field(ge=1)] | None = None
    n: Annotated[int, Field(ge=1)] = 1
    seed: int | None = None
    stream: bool = False
    stream_options: dict | None = None
    decoding: str | None = None  # a chef-genius preset (extra_body={"decoding": "guarded"})
    user: str | None = None

    @property
    def include_usage(self) -> bool:
        return bool((self.stream_options or {}).get("include_usage"))


class TextPart(Strict):
    type: Literal["text"]
    text: str


class Message(Strict):
    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[TextPart]
    name: str | None = None

    @property
    def text(self) -> str:
        return self.content if isinstance(self.content, str) else "".join(p.text for p in self.content)


class ChatRequest(Sampling):
    messages: Annotated[list[Message], Field(min_length=1)]


class CompletionRequest(Sampling):
    prompt: str | Annotated[list[str], Field(min_length=1)]

    @property
    def prompts(self) -> list[str]:
        return [self.prompt] if isinstance(self.prompt, str) else list(self.prompt)


class RecipeRequest(Strict):
    """A recipe as the page asks for one: a title and/or ingredients, optional notes."""

    title: str = ""
    ingredients: str | list[str] = ""
    notes: str = ""
    decoding: str | None = None
    max_tokens: Annotated[int, Field(ge=1)] | None = None
    seed: int = 0
    stream: bool = False
    best_of: Annotated[int, Field(ge=1)] = 1  # sample this many and answer the one `cookable` ranks best

    @field_validator("title", "notes")
    @classmethod
    def _one_line(cls, value: str) -> str:
        return " ".join(value.split())

    @property
    def ingredient_items(self) -> list[str]:
        """Ingredients typed one a line or separated by commas, or sent as a list."""
        lines = self.ingredients.splitlines() if isinstance(self.ingredients, str) else self.ingredients
        items = [part.strip() for line in lines for part in (line.split(",") if isinstance(self.ingredients, str)
                                                             else [line])]
        return [" ".join(item.split()) for item in items if item.strip()]


async def read_body(request, schema: type[Strict], max_bytes: int) -> Any:
    """The request's body as ``schema`` (see the module docstring), or an `ApiError`."""
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > max_bytes):
        raise ApiError(413, f"the request body is larger than {max_bytes} bytes", code="request_too_large")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > max_bytes:
            raise ApiError(413, f"the request body is larger than {max_bytes} bytes", code="request_too_large")
        chunks.append(chunk)
    raw = b"".join(chunks)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        raise ApiError(400, f"the request body is not UTF-8 (byte {error.start})", code="invalid_encoding") from None
    if not text.strip():
        raise ApiError(400, "the request body is empty; send a JSON object", code="invalid_json")
    try:
        data = json.loads(text)
    except ValueError as error:
        raise ApiError(400, f"the request body is not valid JSON: {error}", code="invalid_json") from None
    if not isinstance(data, dict):
        raise ApiError(400, f"the request body must be a JSON object, not {type(data).__name__}", code="invalid_json")
    for name in NOT_SUPPORTED:  # OpenAI's names this server has not built (the recipe endpoint has best_of)
        if name not in schema.model_fields and data.get(name) not in (None, False, [], {}):
            raise ApiError(400, f"'{name}' is not supported by chef-genius serve", param=name,
                           code="unsupported_parameter")
    try:
        return schema.model_validate(data)
    except ValidationError as error:
        # The deepest place (a union's branches each report one): "prompt.1", not "prompt".
        places = [(".".join(str(p) for p in e["loc"] if not _type_tag(p)), e) for e in error.errors()]
        where, first = max(places, key=lambda place: place[0].count(".") + bool(place[0]))
        raise ApiError(400, f"{where or 'body'}: {first['msg']}", param=where or None,
                       code="missing_field" if first["type"] == "missing" else "invalid_value") from None


def _type_tag(part) -> bool:
    """A union's branch in a pydantic error location ("str", "list[str]"), not a field name."""
    return isinstance(part, str) and (part in ("str", "int", "float", "bool", "list", "dict")
                                      or not part.replace("_", "a").isalnum())
