"""Shared pieces of every reader: the `Rejected` row, field checks, and the record mapper that
turns one JSON-like object (RecipeNLG-style, schema.org Recipe, recipe-scrapers output, the
original project's ``input``/``output`` JSONL) into a `Recipe`."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol

from chef_genius.recipe import Recipe, parse_recipe_text
from chef_genius.sources.cells import CellError, parse_list_cell, split_text_list

MAX_FIELD_CHARS = 100_000


@dataclass(frozen=True)
class Rejected:
    """A row that could not become a recipe, and why (a short snake_case reason)."""

    reason: str
    detail: str = ""


Row = tuple[int, "Recipe | Rejected"]
"""A reader's output: the row's position (line for CSV/JSONL, item for JSON) and its result."""


class RecipeReader(Protocol):
    """A streaming reader of one recipe file.

    ``raw_rows`` yields cheap, picklable payloads and ``convert`` (a module-level function)
    turns one into a `Recipe` or `Rejected`, so `prepare` can run the conversion in worker
    processes; `read_rows` does both in-process.
    """

    format_name: str
    position_name: str  # "line" or "item": what the row numbers count

    def raw_rows(self) -> Iterator[tuple[int, object]]: ...

    @staticmethod
    def convert(payload: object) -> Recipe | Rejected: ...


def read_rows(reader: RecipeReader) -> Iterator[Row]:
    """Every row of a reader as ``(position, Recipe | Rejected)``."""
    for position, payload in raw_rows(reader):
        yield position, reader.convert(payload)


def raw_rows(reader: RecipeReader) -> Iterator[tuple[int, object]]:
    """``reader.raw_rows()``, where a stream that breaks mid-file (a truncated .gz, text the
    encoding cannot decode) ends the file with one rejected row saying why, the rows before it
    kept; one that breaks before any row is a `UserError`.

    Raises:
        UserError: the source is unreadable from its start.
    """
    from chef_genius.errors import UserError
    from chef_genius.sources.streams import STREAM_ERRORS, describe_error

    position = 0
    try:
        for position, payload in reader.raw_rows():
            yield position, payload
    except STREAM_ERRORS as error:
        source = getattr(reader, "source", None)
        if isinstance(error, (RuntimeError, NotImplementedError)) and not _zip_problem(error, source):
            raise  # a bug, not a damaged file: never reported as one
        problem = describe_error(error, source)
        if position == 0:
            raise UserError(f"{source.label if source else 'the file'}: {problem}") from None
        yield position + 1, Rejected("unreadable", f"{problem}; the rest of the file is unreadable")


def _zip_problem(error: BaseException, source) -> bool:
    """zipfile's own errors for a member it cannot read (an unsupported compression method, an
    encrypted member); only for zip sources."""
    if getattr(source, "compression", None) != "zip":
        return False
    return isinstance(error, NotImplementedError) or "encrypted" in str(error)


def field_problem(values: list) -> Rejected | None:
    """A rejection for fields with undecodable bytes or absurd length, else None."""
    for value in values:
        if not isinstance(value, str):
            continue
        if len(value) > MAX_FIELD_CHARS:
            return Rejected("field_too_long", f"{len(value):,} characters (limit {MAX_FIELD_CHARS:,})")
        if not value.isascii() and _has_surrogates(value):
            return Rejected("non_utf8", "bytes that the file's encoding cannot decode")
    return None


def _has_surrogates(value: str) -> bool:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


# A credit line among a site's steps ("Photograph by Kate Mathis", "Adapted from Williams-Sonoma,
# ..."): openrecipes' foodnetwork.com and williams-sonoma.com rows hold 426. Not a step: a model
# trained on them writes photographers into its recipes, and a cook reads them as noise.
_CREDIT = re.compile(r"(?i)^(photo(graph)?s?( and [a-z ]+)? (by|courtesy)|illustrations? by|food styl\w* by|"
                     r"prop styl\w* by|adapted (with permission )?from|recipe (courtesy|from)|reprinted (from|with))\b")


def is_credit(step: str) -> bool:
    """A short line that credits a photographer or a source instead of saying what to do (a line
    that goes on after a colon, "Adapted from Grandma's card: whisk ...", is kept)."""
    return len(step) < 200 and ": " not in step and _CREDIT.match(step.strip()) is not None


def build_recipe(title: object, ingredients: object, steps: object, ner: object = None,
                 source: object = "", extra: dict | None = None, lists_only: bool = False) -> Recipe | Rejected:
    """Validate raw fields and build a `Recipe`, or say why not.

    Raw list fields may be lists, JSON / Python-literal list strings, or numbered text (not with
    ``lists_only``: RecipeNLG's cells are JSON lists). A field of the wrong type (a title that is
    a number, an ingredient that is a list) is rejected, never turned into its Python text.
    """
    problem = field_problem([title, ingredients, steps, ner, source])
    if problem:
        return problem
    if title is not None and not isinstance(title, str):
        return Rejected("unparseable_cell", "title: not text")
    try:
        ingredient_list = _cell("ingredients", ingredients, lists_only)
        step_list = [step for step in _cell("steps", steps, lists_only) if not is_credit(step)]
        ner_list = _cell("NER", ner, lists_only) if ner not in (None, "") else []
    except CellError as error:
        return Rejected("unparseable_cell", str(error))
    recipe = Recipe(
        title=title if isinstance(title, str) else "",
        ingredients=ingredient_list,
        steps=step_list,
        ner=ner_list,
        source=source if isinstance(source, str) else "",
        extra=extra or {},
    )
    if not recipe.title:
        return Rejected("missing_title")
    if not recipe.ingredients:
        return Rejected("missing_ingredients")
    if not recipe.steps:
        return Rejected("missing_steps")
    return recipe


def _cell(name: str, cell: object, lists_only: bool) -> list[str]:
    try:
        return parse_list_cell(cell, lists_only)
    except CellError as error:
        raise CellError(f"{name}: {error}") from None


_TITLE_KEYS = ("title", "name", "recipe_name", "recipeName")
_INGREDIENT_KEYS = ("ingredients", "recipeIngredient", "ingredient_list", "ingredientLines")
_STEP_KEYS = ("directions", "steps", "instructions_list", "recipeInstructions", "instructions", "method")
_NER_KEYS = ("NER", "ner", "food_names")


def recipe_from_object(obj: object, fallback_title: str = "") -> Recipe | Rejected:
    """Map one JSON object onto a `Recipe` (see the module docstring for the layouts read)."""
    if not isinstance(obj, dict):
        return Rejected("not_an_object", type(obj).__name__)
    if "@graph" in obj:
        recipes = [node for node in obj["@graph"] if _is_schema_recipe(node)]
        if not recipes:
            return Rejected("no_recipe_in_graph")
        obj = recipes[0]
    if "output" in obj and "input" in obj and not any(k in obj for k in _INGREDIENT_KEYS):
        return _from_project_jsonl(obj)
    title = _first(obj, _TITLE_KEYS) or fallback_title
    steps = _first(obj, _STEP_KEYS)
    if isinstance(steps, list):
        steps = _flatten_howto(steps)
    elif isinstance(steps, str) and not steps.lstrip().startswith("["):
        steps = split_text_list(steps)
    ingredients = _first(obj, _INGREDIENT_KEYS)
    if isinstance(ingredients, str) and not ingredients.lstrip().startswith("["):
        ingredients = [line for line in ingredients.splitlines() if line.strip()]
    extra = {k: obj[k] for k in ("servings", "time", "category", "link", "url") if k in obj}
    source = obj.get("source") if isinstance(obj.get("source"), str) else ""
    return build_recipe(title, ingredients, steps, _first(obj, _NER_KEYS), source, extra)


def _first(obj: dict, keys: tuple[str, ...]) -> object:
    for key in keys:
        if obj.get(key) not in (None, "", []):
            return obj[key]
    return None


def _is_schema_recipe(node: object) -> bool:
    if not isinstance(node, dict):
        return False
    kind = node.get("@type")
    return kind == "Recipe" or (isinstance(kind, list) and "Recipe" in kind)


def _flatten_howto(items: list) -> list:
    """schema.org instructions: strings, HowToStep objects, HowToSection with itemListElement."""
    out: list = []
    for item in items:
        if isinstance(item, dict) and isinstance(item.get("itemListElement"), list):
            out.extend(_flatten_howto(item["itemListElement"]))
        else:
            out.append(item)
    return out


def _from_project_jsonl(obj: dict) -> Recipe | Rejected:
    """The original project's rows: ``input`` (a prompt) and ``output`` (recipe text)."""
    if not isinstance(obj.get("output"), str):
        return Rejected("unparseable_cell", "output is not text")
    parsed = parse_recipe_text(obj["output"]).recipe
    title = parsed.title
    if not title and isinstance(obj.get("input"), str):
        title = obj["input"].split(":", 1)[-1]
    return build_recipe(title, list(parsed.ingredients), list(parsed.steps))
