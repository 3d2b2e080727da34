"""Turn one cell or field into a list of strings, safely (never with eval).

Cells come as JSON lists (RecipeNLG), Python-literal lists (Food.com, parsed with
`ast.literal_eval`, which evaluates literals only), or numbered / newline-separated text.
"""

from __future__ import annotations

import ast
import re

try:  # orjson parses RecipeNLG's JSON cells about four times faster
    from orjson import JSONDecodeError
    from orjson import loads as json_loads
except ImportError:  # pragma: no cover - orjson is a declared dependency
    from json import JSONDecodeError
    from json import loads as json_loads

_NUMBERED_LINE = re.compile(r"^\s*(?:\d{1,3}\s*[.):]|[-*•·])\s*")
_INLINE_STEP = re.compile(r"(?:^|\s)(?:step\s*)?(\d{1,3})[.):]\s+", re.IGNORECASE)


class CellError(ValueError):
    """A cell that looks like a list but cannot be read as one."""


def parse_list_cell(cell: object, lists_only: bool = False) -> list[str]:
    """Read a cell as a list of strings.

    Args:
        cell: a str (JSON list, Python-literal list, numbered or newline-separated text), a list,
            or None.
        lists_only: text must be a JSON or Python-literal list (RecipeNLG and Food.com cells are).

    Returns:
        The items as strings (not yet cleaned; empty items may remain).

    Raises:
        CellError: the cell starts like a list but is not a valid list of strings, an item is
            not text (a list, a number, true/false, an object without text), or ``lists_only``
            and the text is not a list.
    """
    if cell is None:
        return []
    if isinstance(cell, list):
        return _items(cell)
    if not isinstance(cell, str):
        raise CellError(f"not a list or text ({_kind(cell).replace(' without text', '')})")
    text = cell.strip()
    if text.startswith("["):
        return _parse_bracketed(text)
    if lists_only and text:
        raise CellError("not a JSON list")
    return split_text_list(text)


def _parse_bracketed(text: str) -> list[str]:
    # JSON first: it is the common case and an order of magnitude faster than literal_eval.
    try:
        value = json_loads(text)
    except (JSONDecodeError, ValueError):
        try:
            value = ast.literal_eval(text)
        except (ValueError, SyntaxError, MemoryError, RecursionError) as error:
            raise CellError(f"not a JSON or Python list: {type(error).__name__}") from None
    if not isinstance(value, (list, tuple)):
        raise CellError("not a list")
    if all(isinstance(item, str) for item in value):
        return value
    return _items(value)


def _items(values: list | tuple) -> list[str]:
    """Items as text: strings; schema.org objects (HowToStep...) by their text or name; null as
    an empty item. Anything else is not a recipe line, and its Python form (``['a', 'b']``,
    ``True``) would end up in the recipe.

    Raises:
        CellError: naming the first item that is not text.
    """
    out = []
    for position, item in enumerate(values, 1):
        if isinstance(item, str):
            out.append(item)
        elif item is None:
            out.append("")
        elif isinstance(item, dict) and any(isinstance(item.get(k), str) for k in ("text", "name")):
            text, name = item.get("text"), item.get("name")
            out.append(text if isinstance(text, str) and text else name if isinstance(name, str) else "")
        else:
            raise CellError(f"item {position} is not text ({_kind(item)})")
    return out


def _kind(value: object) -> str:
    if isinstance(value, bool):
        return "true/false"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, (list, tuple)):
        return "a list"
    if isinstance(value, dict):
        return "an object without text"
    return f"a {type(value).__name__}"


def split_text_list(text: str) -> list[str]:
    """Split free text into items: one per line, else on inline numbering ("1. ... 2. ...").

    Bullets and leading numbers are removed.
    """
    lines = [line for line in text.splitlines() if line.strip()]
    if len(lines) > 1:
        return [_NUMBERED_LINE.sub("", line) for line in lines]
    starts = [m for m in _INLINE_STEP.finditer(text)]
    numbers = [int(m.group(1)) for m in starts]
    if len(starts) >= 2 and numbers == list(range(numbers[0], numbers[0] + len(numbers))):
        pieces = [text[: starts[0].start()]]
        pieces += [text[m.end() : (starts[i + 1].start() if i + 1 < len(starts) else len(text))]
                   for i, m in enumerate(starts)]
        return [piece for piece in pieces if piece.strip()]
    return [_NUMBERED_LINE.sub("", text)] if text else []
