"""Streaming JSON and JSONL readers.

JSON files are read with ijson, so a list of a million recipes never sits in memory. Supported
top levels: a list of recipe objects; a dict keyed by title whose values are recipes (the
Wikibooks file); a single recipe object, including a schema.org ``@graph``.
"""

from __future__ import annotations

import codecs
import io
import json
from collections.abc import Iterator
from itertools import chain
from pathlib import Path

import ijson
from tqdm import tqdm

from chef_genius.errors import UserError
from chef_genius.recipe import Recipe
from chef_genius.sources.records import Rejected, _has_surrogates, recipe_from_object
from chef_genius.sources.streams import Source, Utf8Stream, printable

MAX_SINGLE_OBJECT_BYTES = 64 * 2**20


class _Progress:
    """Byte-count progress over a source, updated every few thousand rows."""

    def __init__(self, source: Source, position, size: int, enabled: bool):
        self.position = position
        self.bar = tqdm(total=size, unit="B", unit_scale=True, desc=source.name, disable=not enabled, leave=False)

    def tick(self, count: int) -> None:
        if count % 4096 == 0:
            self.bar.update(self.position() - self.bar.n)

    def close(self) -> None:
        self.bar.update(self.bar.total - self.bar.n)
        self.bar.close()


def _utf8(binary, encoding: str, bom: bool):
    """The stream as UTF-8 bytes for ijson, past any UTF-8 byte-order mark."""
    if encoding not in ("utf-8", "utf-8-sig"):
        return Utf8Stream(binary, encoding)
    if bom:
        binary.read(len(codecs.BOM_UTF8))
    return binary


class JsonRecipeReader:
    """Stream recipes from a JSON document (list, dict keyed by title, or one object)."""

    format_name = "json"
    position_name = "item"

    def __init__(self, source: Source | Path, progress: bool = True, encoding: str = "utf-8"):
        self.source = source if isinstance(source, Source) else Source(Path(source))
        self.path = self.source.path
        self.progress = progress
        self.encoding = encoding

    @staticmethod
    def convert(payload: object) -> Recipe | Rejected:
        key, obj = payload
        if isinstance(obj, Rejected):
            return obj
        return recipe_from_object(obj, fallback_title=_title_from_key(key))

    def raw_rows(self) -> Iterator[tuple[int, object]]:
        head = self.source.head(4096)
        first = _first_char(head.decode(self.encoding, "replace"))
        with self.source.open() as (binary, position, size):
            handle = _utf8(binary, self.encoding, head.startswith(codecs.BOM_UTF8))
            progress = _Progress(self.source, position, size, self.progress)
            number = 0
            try:
                if first == "[":
                    items = ((None, obj) for obj in ijson.items(handle, "item", use_float=True))
                elif first == "{":
                    items = self._object_items(handle, size)
                else:
                    raise UserError(f"{self.source.label}: not a JSON list or object")
                for number, pair in enumerate(items, 1):
                    progress.tick(number)
                    yield number, pair
            except (ijson.JSONError, UnicodeDecodeError) as error:
                first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
                problem = (f"is not valid {self.encoding} text" if isinstance(error, UnicodeDecodeError)
                           else f"invalid JSON: {printable(first_line)}")
                if number == 0:  # nothing readable at all: the file is unusable
                    raise UserError(f"{self.source.label}: {problem}") from None
                # Truncated or broken after some recipes: keep those, reject the rest.
                yield number + 1, (None, Rejected("invalid_json", f"{problem}; the rest of the file is unreadable"))
            finally:
                progress.close()

    def _object_items(self, handle, size: int) -> Iterator[tuple[str | None, object]]:
        pairs = ijson.kvitems(handle, "", use_float=True)
        first = next(pairs, None)
        if first is None:
            return
        if isinstance(first[1], dict) and first[0] != "@graph":
            yield from chain([first], pairs)  # a collection keyed by title
            return
        # A single recipe object: small by nature, so read it whole.
        if size > MAX_SINGLE_OBJECT_BYTES:
            raise UserError(f"{self.source.label}: a single JSON object over {MAX_SINGLE_OBJECT_BYTES >> 20} MB")
        text = self.source.head(MAX_SINGLE_OBJECT_BYTES + 1).decode(self.encoding, "replace").lstrip("\ufeff")
        yield None, json.loads(text)


class JsonlRecipeReader:
    """Stream recipes from JSON Lines; a bad line is rejected, the rest are read. UTF-8 lines
    are split as bytes (decoded in `convert`); other encodings, and lines ending in CR alone,
    are read as text."""

    format_name = "jsonl"
    position_name = "line"

    def __init__(self, source: Source | Path, progress: bool = True, encoding: str = "utf-8",
                 cr_lines: bool = False):
        self.source = source if isinstance(source, Source) else Source(Path(source))
        self.path = self.source.path
        self.progress = progress
        self.encoding = encoding
        self.cr_lines = cr_lines

    @staticmethod
    def convert(payload: object) -> Recipe | Rejected:
        return _parse_line(payload)

    def raw_rows(self) -> Iterator[tuple[int, object]]:
        with self.source.open() as (binary, position, size):
            progress = _Progress(self.source, position, size, self.progress)
            as_bytes = self.encoding in ("utf-8", "utf-8-sig") and not self.cr_lines
            lines = binary if as_bytes else io.TextIOWrapper(binary, encoding=self.encoding,
                                                            errors="surrogateescape", newline=None)
            try:
                for number, raw in enumerate(lines, 1):
                    progress.tick(number)
                    if raw.strip():
                        if number == 1:
                            raw = raw.removeprefix(b"\xef\xbb\xbf") if as_bytes else raw.removeprefix("\ufeff")
                        yield number, raw
            finally:
                progress.close()


def _parse_line(raw: bytes | str) -> Recipe | Rejected:
    try:
        text = raw.decode("utf-8") if isinstance(raw, bytes) else raw
    except UnicodeDecodeError:
        return Rejected("non_utf8", "bytes that are not valid UTF-8")
    if not text.isascii() and _has_surrogates(text):
        return Rejected("non_utf8", "bytes that the file's encoding cannot decode")
    try:
        obj = json.loads(text)
    except ValueError as error:
        return Rejected("invalid_json", str(error))
    return recipe_from_object(obj)


def _first_char(head: str) -> str:
    """The first non-blank character (after any byte-order mark)."""
    return head.lstrip("\ufeff").lstrip()[:1]


def _title_from_key(key: str | None) -> str:
    if not key:
        return ""
    return key.split(":", 1)[1] if key.startswith("Cookbook:") else key
