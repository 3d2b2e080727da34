"""The `Recipe` record, its one training-text serialization, and the tolerant parser.

One serialization is used as the training target everywhere::

    Title: No-Bake Nut Cookies || Ingredients: 1 c. sugar | 1/2 c. milk || Steps: Mix well. | Chill.

It is a single line on purpose: T5's SentencePiece turns newlines into spaces and collapses runs
of whitespace, so a format that relied on line breaks would not survive the tokenizer. Sections
are separated by ``||`` and items by ``|``; both characters are in the T5 vocabulary, and the
record normalizer replaces ``|`` inside any field by ``/``, so the separators are never
ambiguous and ``parse_recipe(serialize(r)) == r`` holds for every `Recipe` r. Through a
tokenizer, ``parse_recipe(decode(encode(serialize(r)))) == r`` holds for T5-style and byte-level
tokenizers whenever every character is in the vocabulary (T5's own lacks ``<``, ``{`` and ``}``)
and the text holds no literal special-token string such as ``</s>``.

`parse_recipe` also reads messy model output, Markdown and plain text: it never raises, and
returns whatever part of a recipe it can find.
"""

from __future__ import annotations

import html
import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass, field

SECTION_SEP = " || "
ITEM_SEP = " | "

_ZERO_WIDTH = dict.fromkeys(map(ord, "\u200b\u200c\u200d\u2060\ufeff\u00ad"), None)
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
_EMPTY_PARENS = re.compile(r"\(\s*\)")


def clean_text(text: str) -> str:
    """Normalize one field: NFC unicode, HTML entities, single spaces, no reserved ``|``.

    Fractions such as ``½`` and ``1/2`` are kept as written (NFC, unlike NFKC, leaves ``½``
    alone). Empty parentheses, left behind by stripped wiki templates, are removed.

    Args:
        text: raw field text.

    Returns:
        The cleaned text, stripped, with every run of whitespace turned into one space.
    """
    # Hot path of `prepare` (20+ calls per recipe): each rewrite is guarded by a cheap test.
    if not text.isascii():
        text = unicodedata.normalize("NFC", text).translate(_ZERO_WIDTH)
    if "&" in text and ";" in text:
        text = html.unescape(text)
    if "|" in text:
        text = text.replace("|", "/")
    if not text.isprintable():
        text = _CONTROL.sub(" ", text)
    text = " ".join(text.split())
    if "()" in text or "( )" in text:
        text = " ".join(_EMPTY_PARENS.sub("", text).split())
    return text


def clean_items(items: Iterable[str]) -> tuple[str, ...]:
    """Clean each item and drop the empty ones (and anything that is not a string)."""
    out = []
    for item in items:
        if isinstance(item, str) and (item := clean_text(item)):
            out.append(item)
    return tuple(out)


@dataclass(frozen=True)
class Recipe:
    """A recipe: the currency between readers, scoring, templates, parsing and metrics.

    Every text field is normalized on construction with `clean_text`, so two recipes that differ
    only in whitespace or unicode form compare equal.

    Attributes:
        title: the dish's name.
        ingredients: ingredient lines, with quantities where the source has them.
        steps: the method, one instruction per item.
        ner: food names (RecipeNLG's NER column); used to build prompts, not serialized.
        source: where the recipe came from (a site or a file name).
        extra: anything else a reader kept (servings, time, link...). Not compared.
    """

    title: str = ""
    ingredients: tuple[str, ...] = ()
    steps: tuple[str, ...] = ()
    ner: tuple[str, ...] = ()
    source: str = ""
    extra: dict = field(default_factory=dict, compare=False, hash=False)

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        set_(self, "title", clean_text(self.title or ""))
        set_(self, "ingredients", clean_items(self.ingredients or ()))
        set_(self, "steps", clean_items(self.steps or ()))
        set_(self, "ner", clean_items(self.ner or ()))
        set_(self, "source", clean_text(self.source or ""))


def serialize(recipe: Recipe) -> str:
    """The training-target text of a recipe (see the module docstring for the format)."""
    return (
        f"Title: {recipe.title}{SECTION_SEP}"
        f"Ingredients: {ITEM_SEP.join(recipe.ingredients)}{SECTION_SEP}"
        f"Steps: {ITEM_SEP.join(recipe.steps)}"
    )


def serialized_length(recipe: Recipe) -> int:
    """``len(serialize(recipe))`` without building the string (used on the `prepare` hot path)."""
    fixed = len("Title: ") + len("Ingredients: ") + len("Steps: ") + 2 * len(SECTION_SEP)
    sep = len(ITEM_SEP)
    ingredients, steps = recipe.ingredients, recipe.steps
    return (fixed + len(recipe.title) + sum(map(len, ingredients)) + sep * max(len(ingredients) - 1, 0)
            + sum(map(len, steps)) + sep * max(len(steps) - 1, 0))


@dataclass(frozen=True)
class ParsedRecipe:
    """What `parse_recipe_text` found: the recipe and which section headers were present."""

    recipe: Recipe
    has_ingredients_section: bool
    has_steps_section: bool


_HEADER_NAMES = {
    "title": "title",
    "name": "title",
    "recipe": "title",
    "ingredients": "ingredients",
    "ingredient": "ingredients",
    "steps": "steps",
    "directions": "steps",
    "instructions": "steps",
    "method": "steps",
    "preparation": "steps",
}
_CANONICAL_PART = re.compile(r"^\s*([A-Za-z]+)\s*:\s?(.*)$", re.DOTALL)
# A header in free text: "Ingredients:" anywhere, or "## Ingredients" / "Ingredients" on a line.
_FREE_HEADER = re.compile(
    r"(?:(?<=\s)|^)(?:#{1,6}\s*)?(?:\*\*)?"
    r"(title|name|ingredients?|steps|directions|instructions|method|preparation)"
    r"(?:\*\*)?\s*(?::|(?=\s*\n)|$)",
    re.IGNORECASE | re.MULTILINE,
)
_BULLET = re.compile(r"^\s*(?:[-*•·]|\d{1,3}\s*[.)])\s+")
_INLINE_BULLET = re.compile(r"\s[-*•]\s")
_INLINE_NUMBER = re.compile(r"(?:^|\s)(\d{1,3})[.)]\s+")


def parse_recipe(text: str) -> Recipe:
    """Read recipe text (training format, Markdown or plain) back into a `Recipe`. Never raises."""
    return parse_recipe_text(text).recipe


def parse_recipe_text(text: str) -> ParsedRecipe:
    """Parse text into a recipe and report which sections it had.

    The canonical ``||``-separated form is read exactly. Anything else (Markdown, numbered
    lists, model output with a separator missing) goes through a tolerant reader that looks for
    section headers and splits items on ``|``, line breaks, bullets or inline numbering.

    Args:
        text: recipe text; may be partial, empty or garbage.

    Returns:
        A `ParsedRecipe`; missing parts are empty.
    """
    if not isinstance(text, str):
        text = ""
    if "||" in text:
        parsed = _parse_canonical(text)
        if parsed is not None:
            return parsed
    return _parse_free(text)


def _parse_canonical(text: str) -> ParsedRecipe | None:
    fields: dict[str, str] = {}
    for position, part in enumerate(text.split("||")):
        match = _CANONICAL_PART.match(part)
        name = _HEADER_NAMES.get(match.group(1).lower()) if match else None
        if name is None:
            if position == 0 and part.strip():
                fields.setdefault("title", part)
                continue
            return None
        fields.setdefault(name, match.group(2))
    return ParsedRecipe(
        Recipe(
            title=fields.get("title", ""),
            ingredients=_split_items(fields.get("ingredients", "")),
            steps=_split_items(fields.get("steps", "")),
        ),
        has_ingredients_section="ingredients" in fields,
        has_steps_section="steps" in fields,
    )


def _parse_free(text: str) -> ParsedRecipe:
    sections: dict[str, str] = {}
    matches = list(_FREE_HEADER.finditer(text))
    preamble = text[: matches[0].start()] if matches else text
    for i, match in enumerate(matches):
        end = matches[i + 1].start() if i + 1 < len(matches) else len(text)
        name = _HEADER_NAMES[match.group(1).lower()]
        body = text[match.end() : end]
        if name == "title":
            body = body.strip().split("\n", 1)[0]
        sections.setdefault(name, body)
    title = sections.get("title") or _first_line(preamble)
    return ParsedRecipe(
        Recipe(
            title=title,
            ingredients=_split_items(sections.get("ingredients", "")),
            steps=_split_items(sections.get("steps", "")),
        ),
        has_ingredients_section="ingredients" in sections,
        has_steps_section="steps" in sections,
    )


def _first_line(text: str) -> str:
    for line in text.splitlines():
        line = line.strip().lstrip("#").strip().strip("*").strip()
        if line:
            return line
    return ""


def _split_items(body: str) -> tuple[str, ...]:
    """Split a section body into items: on ``|``, else lines, else inline numbering."""
    body = body.strip()
    if not body:
        return ()
    if "|" in body:
        return clean_items(body.split("|"))
    lines = [line for line in body.splitlines() if line.strip()]
    if len(lines) > 1:
        return clean_items(_BULLET.sub("", line) for line in lines)
    if body[:2] in ("- ", "* ", "• "):  # a bulleted list that lost its newlines (T5 output)
        return clean_items(_INLINE_BULLET.split(body[2:]))
    return clean_items(_split_inline_numbered(_BULLET.sub("", body)))


def _split_inline_numbered(line: str) -> list[str]:
    """Split "1. Mix. 2. Bake." on numbers that count up from 1 or 2; else one item."""
    starts, expected = [], 1
    for match in _INLINE_NUMBER.finditer(line):
        if int(match.group(1)) == expected or (not starts and int(match.group(1)) == 2):
            starts.append(match)
            expected = int(match.group(1)) + 1
    if len(starts) < 2:
        return [line]
    pieces = [line[: starts[0].start()]]
    for i, match in enumerate(starts):
        end = starts[i + 1].start() if i + 1 < len(starts) else len(line)
        pieces.append(line[match.end() : end])
    return pieces


def to_markdown(recipe: Recipe) -> str:
    """Render a recipe for people."""
    lines = [f"# {recipe.title or 'Untitled recipe'}", "", "## Ingredients", ""]
    lines += [f"- {item}" for item in recipe.ingredients] or ["(none)"]
    lines += ["", "## Steps", ""]
    lines += [f"{n}. {step}" for n, step in enumerate(recipe.steps, 1)] or ["(none)"]
    return "\n".join(lines) + "\n"


def to_dict(recipe: Recipe) -> dict:
    """A JSON-ready dict of the recipe's fields (``extra`` included when it is JSON-safe)."""
    out = {
        "title": recipe.title,
        "ingredients": list(recipe.ingredients),
        "steps": list(recipe.steps),
    }
    if recipe.ner:
        out["ner"] = list(recipe.ner)
    if recipe.source:
        out["source"] = recipe.source
    return out
