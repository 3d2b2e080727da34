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
    raw_rows,
    read_rows,
    recipe_from_object,
)
from chef_genius.sources.streams import (
    DETECT_BYTES,
    Source,
    check_encoding,
    decoded_head,
    detect_encoding,
    first_line,
    mostly_utf8,
    printable,
    sources_in,
)

FORMATS = ("auto", "recipenlg", "foodcom", "csv", "json", "jsonl")

__all__ = [
    "FORMATS", "MAX_FIELD_CHARS", "RecipeReader", "Rejected", "Row", "open_source", "open_sources", "raw_rows",
    "read_rows", "recipe_from_object",
]


def open_sources(path: str | Path, fmt: str = "auto", columns: str | None = None, progress: bool = True,
                 encoding: str | None = None) -> list[RecipeReader]:
    """The readers of a file: one, or one per recipe file of a zip (see `open_source`)."""
    path = _existing_file(Path(path))
    return [_reader(source, fmt, columns, progress, encoding) for source in sources_in(path)]


def open_source(path: str | Path, fmt: str = "auto", columns: str | None = None,
                progress: bool = True, encoding: str | None = None) -> RecipeReader:
    """Pick the reader for a file (plain, ``.gz``, ``.bz2``, ``.xz``, or a zip of one file).

    Args:
        path: the recipe file.
        fmt: one of `FORMATS`; "auto" detects from the content.
        columns: an explicit column map for CSV (``title=Title,ingredients=...,steps=...``).
        progress: show a progress bar while reading.
        encoding: the text encoding; None detects it (`streams.detect_encoding`).

    Raises:
        UserError: the file is missing, empty, a directory, unreadable, lacks the needed
            columns, or is a zip of several files (`open_sources` reads those).
    """
    readers = open_sources(path, fmt, columns, progress, encoding)
    if len(readers) > 1:
        raise UserError(f"{path}: the zip holds {len(readers)} files; read it with open_sources")
    return readers[0]


def _existing_file(path: Path) -> Path:
    if not path.exists():
        raise UserError(f"{path}: no such file")
    if path.is_dir():
        raise UserError(f"{path}: is a directory, not a recipe file")
    return path


def _reader(source: Source, fmt: str, columns: str | None, progress: bool, encoding: str | None) -> RecipeReader:
    if fmt not in FORMATS:
        raise UserError(f"unknown --format '{fmt}' (choose from {', '.join(FORMATS)})")
    forced = check_encoding(encoding) if encoding else None
    sample = source.head(DETECT_BYTES)
    if forced and not forced.startswith("utf-8") and mostly_utf8(sample, whole=len(sample) < DETECT_BYTES):
        import warnings

        warnings.warn(f"{source.label}: --encoding {encoding} read on text that is mostly valid UTF-8: its accented "
                      "letters will come out garbled (mojibake); leave --encoding out to detect the encoding per "
                      "file", stacklevel=2)
    encoding = forced or detect_encoding(sample, whole=len(sample) < DETECT_BYTES)
    text = decoded_head(sample[:65536], encoding)
    if not text.strip().lstrip("\ufeff").strip():
        raise UserError(f"{source.label}: is empty")
    if fmt == "auto":
        fmt = "csv" if columns else _by_extension(source.name) or _sniff(text)
    if fmt == "json":
        return JsonRecipeReader(source, progress, encoding)
    if fmt == "jsonl":
        return JsonlRecipeReader(source, progress, encoding, cr_lines="\n" not in text and "\r" in text)
    return _csv_reader(source, text, fmt, columns, progress, encoding)


def _by_extension(name: str) -> str | None:
    return {".json": "json", ".jsonl": "jsonl", ".ndjson": "jsonl", ".csv": "csv", ".tsv": "csv"}.get(
        Path(name).suffix.lower())


def _sniff(head: str) -> str:
    text = head.lstrip("\ufeff").lstrip()
    if text.startswith("["):
        return "json"
    if text.startswith("{"):
        try:
            return "jsonl" if isinstance(json.loads(first_line(text)), dict) else "json"
        except ValueError:
            return "json"
    return "csv"


def _delimiter(header_line: str) -> str:
    """The header's delimiter: ',' unless ';', tab or '|' splits it into more columns."""
    counts = {d: header_line.count(d) for d in (",", ";", "\t", "|")}
    best = max(counts, key=lambda d: counts[d])
    return best if counts[best] > counts[","] else ","


def _csv_reader(source: Source, head: str, fmt: str, columns: str | None, progress: bool,
                encoding: str) -> CsvRecipeReader:
    header_line = first_line(head.lstrip("\ufeff"))
    delimiter = _delimiter(header_line)
    header = next(csv.reader([header_line], delimiter=delimiter), [])
    if columns:
        return CsvRecipeReader(source, parse_column_map(columns), "csv", progress, delimiter, encoding)
    mapping = detect_columns(header)
    if mapping is None:
        found = ", ".join(h for h in header if h)
        raise UserError(
            f"{source.label}: lacks the needed columns: title/name, ingredients and directions/steps "
            f"(found: {printable(found) or 'none'}); "
            "name yours with --columns title=...,ingredients=...,steps=..."
        )
    if fmt == "auto" or fmt == "csv":
        recipenlg = mapping["steps"].lower() == "directions" and "ner" in mapping  # full_dataset.csv's columns
        fmt = "recipenlg" if recipenlg else (
            "foodcom" if mapping["title"].lower() == "name" else "csv")
    return CsvRecipeReader(source, mapping, fmt, progress, delimiter, encoding)
