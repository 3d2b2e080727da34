"""Prompts as training and `generate` build them, and the decoding a request asks for.

- a recipe request (title, ingredients, notes): the run's first template around the canonical
  request (`augment.request_text`: "Title with food, food", or "a dish with food and food" with no
  title), the food names read from the ingredients as training reads a recipe without a NER
  column (`usability.food_names_of`); notes are added as training adds a cooking tip
  ("PROMPT. Tip: NOTES");
- a completion prompt: encoded as `generate` encodes a prompt (the model family's `encode_sources`: in the
  chat template as a user turn where the model has one);
- chat messages: rendered by the tokenizer's chat template with the assistant header, as
  `encoding` renders a prompt; a model without one gets the non-assistant messages' text, one a
  line, as one prompt.
"""

from __future__ import annotations

from dataclasses import dataclass

from chef_genius.serve.schemas import ApiError


@dataclass(frozen=True)
class Limits:
    max_prompt_chars: int = 16_000
    max_prompt_tokens: int = 1024
    max_tokens: int = 512  # a request's default
    max_tokens_cap: int = 1024
    max_n: int = 8


def recipe_prompt(templates: list[str], title: str, ingredients: list[str], notes: str) -> tuple[str, list[str]]:
    """The prompt and the food names it asks for."""
    from chef_genius.augment import request_text
    from chef_genius.usability import food_names_of

    names = food_names_of(ingredients) or ingredients
    if not title and not names:
        raise ApiError(400, "say what to cook: a title, ingredients or both", param="title", code="missing_field")
    prompt = templates[0].format(text=request_text(title, names, 1 if title else 2))
    return (f"{prompt}. Tip: {notes}" if notes else prompt), names[:6]


def _check_text(text: str, limits: Limits, param: str) -> None:
    if not text.strip():
        raise ApiError(400, f"{param}: the prompt is empty", param=param, code="empty_prompt")
    if len(text) > limits.max_prompt_chars:
        raise ApiError(400, f"{param}: the prompt is {len(text):,} characters; the limit is "
                            f"{limits.max_prompt_chars:,}", param=param, code="prompt_too_long")


def _check_tokens(ids: list[int], limits: Limits, param: str) -> list[int]:
    if len(ids) > limits.max_prompt_tokens:
        raise ApiError(400, f"{param}: the prompt is {len(ids):,} tokens; the limit is {limits.max_prompt_tokens:,}",
                       param=param, code="prompt_too_long")
    return ids


def encode_prompts(tokenizer, family, texts: list[str], limits: Limits, param: str = "prompt") -> list[list[int]]:
    """Token ids of plain prompts, as `generate` encodes them for the model's ``family`` (never
    cut: too long is an error)."""
    for text in texts:
        _check_text(text, limits, param)
    encoded = family.encode_sources(tokenizer, texts, limits.max_prompt_chars * 4 + 16)
    return [_check_tokens(ids, limits, param) for ids in encoded]


def encode_messages(tokenizer, family, messages: list, limits: Limits) -> list[int]:
    """Token ids of a chat (see the module docstring)."""
    from chef_genius.encoding import has_chat_template, token_ids

    for i, message in enumerate(messages):
        if len(message.text) > limits.max_prompt_chars:
            _check_text(message.text, limits, f"messages.{i}.content")
    if not any(m.text.strip() for m in messages if m.role != "assistant"):
        raise ApiError(400, "messages: no user or system message has any text", param="messages", code="empty_prompt")
    if family.keeps_chat_template() and has_chat_template(tokenizer):
        turns = [{"role": "system" if m.role == "developer" else m.role, "content": m.text} for m in messages]
        try:
            rendered = tokenizer.apply_chat_template(turns, add_generation_prompt=True, tokenize=False)
        except Exception as error:  # a template that refuses an order of roles raises its own error
            raise ApiError(400, f"messages: the model's chat template refused them ({error})", param="messages",
                           code="invalid_value") from None
        return _check_tokens(token_ids(tokenizer, [rendered], add_special_tokens=False)[0], limits, "messages")
    text = "\n".join(m.text for m in messages if m.role != "assistant" and m.text.strip())
    return encode_prompts(tokenizer, family, [text], limits, "messages")[0]


def decoding_settings(preset: str | None, default: str, temperature: float | None = None,
                      top_p: float | None = None) -> tuple[str, dict]:
    """(name, settings): a preset of `inference.DECODING` (the server's default when none is
    named); OpenAI's ``temperature``/``top_p``, when given, decode as OpenAI's do instead:
    temperature 0 is greedy, else sampling at that temperature and top_p, no top-k."""
    from chef_genius.inference import DECODING, NEUTRAL

    name = preset or default
    if name not in DECODING:
        raise ApiError(400, f"decoding: unknown preset '{name}' (choose from {', '.join(DECODING)})",
                       param="decoding", code="invalid_value")
    if temperature is None and top_p is None:
        return name, {**NEUTRAL, **DECODING[name]}
    temperature = 1.0 if temperature is None else temperature
    if temperature == 0:
        return "greedy", {**NEUTRAL, "do_sample": False}
    return "custom", {**NEUTRAL, "do_sample": True, "temperature": temperature, "top_p": top_p or 1.0, "top_k": 0}


def max_tokens(requested: int | None, limits: Limits) -> int:
    if requested is None:
        return limits.max_tokens
    if requested > limits.max_tokens_cap:
        raise ApiError(400, f"max_tokens: {requested:,} is over this server's limit of {limits.max_tokens_cap:,}",
                       param="max_tokens", code="invalid_value")
    return requested
