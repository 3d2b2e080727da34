"""Recipe readers, chosen by looking at a file's content or named with ``--format``.

Every reader streams: memory does not grow with the file's size.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

from chef_genius.errors import UserError
from chef_genius.sources.csv_reader import CsvRecipeReader, detect_columns, parse_column_map
from chef_genius.sources.json_reader import JsonlRecipeReader, JsonRecipeReader
from chef_genius.sources.records import (
    MAX_FIELD_CHARS,
    RecipeReader,
    Rejected,
    Row,
    read_rows,
    recipe_from_object,
)

FORMATS = ("auto", "recipenlg", "foodcom", "csv", "json", "jsonl")

__all__ = [
    "FORMATS", "MAX_FIELD_CHARS", "RecipeReader", "Rejected", "Row", "open_source", "read_rows",
    "recipe_from_object",
]


def open_source(path: str | Path, fmt: str = "auto", columns: str | None = None,
                progress: bool = True) -> RecipeReader:
    """Pick the reader for a file.

    Args:
        path: the recipe file.
        fmt: one of `FORMATS`; "auto" detects from the content.
        columns: an explicit column map for CSV (``title=Title,ingredients=...,steps=...``).
        progress: show a progress bar while reading.

    Raises:
        UserError: the file is missing, empty, a directory, or lacks the needed columns.
    """
    path = Path(path)
    if not path.exists():
        raise UserError(f"{path}: no such file")
    if path.is_dir():
        raise UserError(f"{path}: is a directory, not a recipe file")
    if fmt not in FORMATS:
        raise UserError(f"unknown --format '{fmt}' (choose from {', '.join(FORMATS)})")
    try:
        with open(path, "rb") as handle:
            head = handle.read(65536)
    except OSError as error:
        raise UserError(f"{path}: cannot be read: {error.strerror}") from None
    if not head.strip():
        raise UserError(f"{path}: is empty")
    if fmt == "auto":
        fmt = "csv" if columns else _by_extension(path) or _sniff(head)
    if fmt == "json":
        return JsonRecipeReader(path, progress)
    if fmt == "jsonl":
        return JsonlRecipeReader(path, progress)
    return _csv_reader(path, head, fmt, columns, progress)


def _by_extension(path: Path) -> str | None:
    return {".json": "json", ".jsonl": "jsonl", ".ndjson": "jsonl", ".csv": "csv", ".tsv": "csv"}.get(
        path.suffix.lower())


def _sniff(head: bytes) -> str:
    text = head.removeprefix(b"\xef\xbb\xbf").lstrip()
    if text.startswith(b"["):
        return "json"
    if text.startswith(b"{"):
        first_line = text.split(b"\n", 1)[0]
        try:
            return "jsonl" if isinstance(json.loads(first_line), dict) else "json"
        except ValueError:
            return "json"
    return "csv"


def _delimiter(header_line: str) -> str:
    """The header's delimiter: ',' unless ';', tab or '|' splits it into more columns."""
    counts = {d: header_line.count(d) for d in (",", ";", "\t", "|")}
    best = max(counts, key=lambda d: counts[d])
    return best if counts[best] > counts[","] else ","


def _csv_reader(path: Path, head: bytes, fmt: str, columns: str | None, progress: bool) -> CsvRecipeReader:
    header_line = head.decode("utf-8-sig", "replace").split("\n", 1)[0].rstrip("\r")
    delimiter = _delimiter(header_line)
    header = next(csv.reader([header_line], delimiter=delimiter), [])
    if columns:
        return CsvRecipeReader(path, parse_column_map(columns), "csv", progress, delimiter)
    mapping = detect_columns(header)
    if mapping is None:
        raise UserError(
            f"{path}: lacks the needed columns: title/name, ingredients and directions/steps "
            f"(found: {', '.join(h for h in header if h) or 'none'}); "
            "name yours with --columns title=...,ingredients=...,steps=..."
        )
    if fmt == "auto" or fmt == "csv":
        recipenlg = mapping["steps"].lower() == "directions" and "ner" in mapping  # full_dataset.csv's columns
        fmt = "recipenlg" if recipenlg else (
            "foodcom" if mapping["title"].lower() == "name" else "csv")
    return CsvRecipeReader(path, mapping, fmt, progress, delimiter)
