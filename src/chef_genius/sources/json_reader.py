"""Streaming JSON and JSONL readers.

JSON files are read with ijson, so a list of a million recipes never sits in memory. Supported
top levels: a list of recipe objects; a dict keyed by title whose values are recipes (the
Wikibooks file); a single recipe object, including a schema.org ``@graph``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from itertools import chain
from pathlib import Path

import ijson
from tqdm import tqdm

from chef_genius.errors import UserError
from chef_genius.recipe import Recipe
from chef_genius.sources.records import Rejected, recipe_from_object

MAX_SINGLE_OBJECT_BYTES = 64 * 2**20


class _Progress:
    """Byte-count progress over a binary file, updated every few thousand rows."""

    def __init__(self, path: Path, handle, enabled: bool):
        self.handle = handle
        self.bar = tqdm(total=path.stat().st_size, unit="B", unit_scale=True, desc=path.name,
                        disable=not enabled, leave=False)

    def tick(self, count: int) -> None:
        if count % 4096 == 0:
            self.bar.update(self.handle.tell() - self.bar.n)

    def close(self) -> None:
        self.bar.update(self.bar.total - self.bar.n)
        self.bar.close()


class JsonRecipeReader:
    """Stream recipes from a JSON document (list, dict keyed by title, or one object)."""

    format_name = "json"
    position_name = "item"

    def __init__(self, path: Path, progress: bool = True):
        self.path = path
        self.progress = progress

    @staticmethod
    def convert(payload: object) -> Recipe | Rejected:
        key, obj = payload
        if isinstance(obj, Rejected):
            return obj
        return recipe_from_object(obj, fallback_title=_title_from_key(key))

    def raw_rows(self) -> Iterator[tuple[int, object]]:
        with open(self.path, "rb") as handle:
            first = _first_char(handle)
            progress = _Progress(self.path, handle, self.progress)
            number = 0
            try:
                if first == b"[":
                    items = ((None, obj) for obj in ijson.items(handle, "item", use_float=True))
                elif first == b"{":
                    items = self._object_items(handle)
                else:
                    raise UserError(f"{self.path}: not a JSON list or object")
                for number, pair in enumerate(items, 1):
                    progress.tick(number)
                    yield number, pair
            except (ijson.JSONError, UnicodeDecodeError) as error:
                first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
                problem = ("is not valid UTF-8" if isinstance(error, UnicodeDecodeError)
                           else f"invalid JSON: {first_line}")
                if number == 0:  # nothing readable at all: the file is unusable
                    raise UserError(f"{self.path}: {problem}") from None
                # Truncated or broken after some recipes: keep those, reject the rest.
                yield number + 1, (None, Rejected("invalid_json", f"{problem}; the rest of the file is unreadable"))
            finally:
                progress.close()

    def _object_items(self, handle) -> Iterator[tuple[str | None, object]]:
        pairs = ijson.kvitems(handle, "", use_float=True)
        first = next(pairs, None)
        if first is None:
            return
        if isinstance(first[1], dict) and first[0] != "@graph":
            yield from chain([first], pairs)  # a collection keyed by title
            return
        # A single recipe object: small by nature, so read it whole.
        if self.path.stat().st_size > MAX_SINGLE_OBJECT_BYTES:
            raise UserError(f"{self.path}: a single JSON object over {MAX_SINGLE_OBJECT_BYTES >> 20} MB")
        with open(self.path, encoding="utf-8-sig") as whole:
            yield None, json.load(whole)


class JsonlRecipeReader:
    """Stream recipes from JSON Lines; a bad line is rejected, the rest are read."""

    format_name = "jsonl"
    position_name = "line"

    def __init__(self, path: Path, progress: bool = True):
        self.path = path
        self.progress = progress

    @staticmethod
    def convert(payload: object) -> Recipe | Rejected:
        return _parse_line(payload)

    def raw_rows(self) -> Iterator[tuple[int, object]]:
        with open(self.path, "rb") as handle:
            progress = _Progress(self.path, handle, self.progress)
            try:
                for number, raw in enumerate(handle, 1):
                    progress.tick(number)
                    if raw.strip():
                        yield number, raw.removeprefix(b"\xef\xbb\xbf") if number == 1 else raw
            finally:
                progress.close()


def _parse_line(raw: bytes) -> Recipe | Rejected:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return Rejected("non_utf8", "bytes that are not valid UTF-8")
    try:
        obj = json.loads(text)
    except ValueError as error:
        return Rejected("invalid_json", str(error))
    return recipe_from_object(obj)


def _first_char(handle) -> bytes:
    """The first non-blank byte; leaves the handle just past any UTF-8 byte-order mark."""
    head = handle.read(4096)
    bom = head.startswith(b"\xef\xbb\xbf")
    handle.seek(3 if bom else 0)
    return head[3 if bom else 0 :].lstrip()[:1]


def _title_from_key(key: str | None) -> str:
    if not key:
        return ""
    return key.split(":", 1)[1] if key.startswith("Cookbook:") else key
