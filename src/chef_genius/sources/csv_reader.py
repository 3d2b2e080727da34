"""Streaming CSV reader for RecipeNLG ``full_dataset.csv``, Food.com ``RAW_recipes.csv`` and any
CSV with a column map. The layouts differ only in which columns hold what and in cell syntax,
which `parse_list_cell` handles, so one reader serves them all."""

from __future__ import annotations

import csv
import io
import sys
from collections.abc import Iterator
from pathlib import Path

from tqdm import tqdm

from chef_genius.errors import UserError
from chef_genius.recipe import Recipe
from chef_genius.sources.records import Rejected, build_recipe
from chef_genius.sources.streams import Source

FIELDS = ("title", "ingredients", "steps", "ner", "source")
REQUIRED_FIELDS = ("title", "ingredients", "steps")
# Column names recognised without a map, lower-cased, in order of preference.
KNOWN_COLUMNS = {
    "title": ("title", "name", "recipe_name"),
    "ingredients": ("ingredients", "recipeingredient"),
    "steps": ("directions", "steps", "instructions", "method"),
    "ner": ("ner",),
    "source": ("source",),
}

csv.field_size_limit(min(sys.maxsize, 2**31 - 1))


def parse_column_map(text: str) -> dict[str, str]:
    """Parse ``title=Title,ingredients=Ingredients,steps=Instructions``.

    Raises:
        UserError: malformed text, unknown field names, or a required field missing.
    """
    mapping: dict[str, str] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        field, sep, column = part.partition("=")
        field = field.strip().lower()
        if not sep or not column.strip():
            raise UserError(f"--columns: '{part}' is not FIELD=COLUMN")
        if field == "directions":
            field = "steps"
        if field not in FIELDS:
            raise UserError(f"--columns: unknown field '{field}' (fields: {', '.join(FIELDS)})")
        mapping[field] = column.strip()
    missing = [f for f in REQUIRED_FIELDS if f not in mapping]
    if missing:
        raise UserError(f"--columns: no column given for {', '.join(missing)}")
    return mapping


def detect_columns(header: list[str]) -> dict[str, str] | None:
    """Map recipe fields to header columns by known names; None if a required one is missing."""
    by_lower = {name.strip().lower(): name for name in header}
    mapping = {}
    for field, candidates in KNOWN_COLUMNS.items():
        for candidate in candidates:
            if candidate in by_lower:
                mapping[field] = by_lower[candidate]
                break
    return mapping if all(f in mapping for f in REQUIRED_FIELDS) else None


class CsvRecipeReader:
    """Stream recipes from a CSV source whose columns are given by ``column_map``."""

    position_name = "line"

    def __init__(self, source: Source | Path, column_map: dict[str, str], format_name: str, progress: bool = True,
                 delimiter: str = ",", encoding: str = "utf-8-sig"):
        self.source = source if isinstance(source, Source) else Source(Path(source))
        self.path = self.source.path
        self.delimiter = delimiter
        self.column_map = column_map
        self.format_name = format_name
        self.progress = progress
        self.encoding = encoding
        if format_name == "recipenlg":  # its list cells are JSON lists: other text is a broken cell
            self.convert = convert_json_list_cells

    @staticmethod
    def convert(payload: object) -> Recipe | Rejected:
        if isinstance(payload, Rejected):
            return payload
        return build_recipe(*payload)

    def raw_rows(self) -> Iterator[tuple[int, object]]:
        """Yield ``(line, cells in FIELDS order)``, or ``(line, Rejected)`` for broken rows.

        A record that spans several physical lines but has the wrong number of cells is almost
        always an unbalanced quote that swallowed the rows after it: only its first line is
        rejected, and the following lines are read again, so no valid row is lost. Lines end
        in LF, CRLF or CR; bytes the encoding cannot decode reject their row (`field_problem`).
        """
        with (
            self.source.open() as (binary, position, size),
            io.TextIOWrapper(binary, encoding=self.encoding, errors="surrogateescape", newline="") as handle,
            tqdm(total=size, unit="B", unit_scale=True, desc=self.source.name, disable=not self.progress,
                 leave=False) as bar,
        ):
            lines = _ReplayableLines(handle)
            reader = csv.reader(lines, delimiter=self.delimiter)
            header = next(reader)
            if header and header[0].startswith("\ufeff"):
                header[0] = header[0][1:]
            index = self._column_indexes(header)
            width = len(header)
            reported = 0
            while True:
                lines.start_record()
                try:
                    cells = next(reader)
                except StopIteration:
                    break
                except csv.Error as error:
                    yield lines.record_start, Rejected("malformed_row", str(error))
                    lines.replay_after_first()
                    continue
                line = lines.record_start
                if line - reported >= 8192:
                    bar.update(position() - bar.n)
                    reported = line
                if len(cells) != width:
                    if not any(cell.strip() for cell in cells):
                        continue  # blank line
                    if lines.record_lines > 1:
                        lines.replay_after_first()
                        yield line, Rejected("malformed_row", "unbalanced quote (the next lines were read again)")
                    else:
                        yield line, Rejected("malformed_row", f"{len(cells)} cells, header has {width}")
                    continue
                yield line, tuple(cells[i] if i is not None else None for i in index)
            bar.update(size - bar.n)

    def _column_indexes(self, header: list[str]) -> list[int | None]:
        positions = {name: i for i, name in enumerate(header)}
        missing = [column for column in self.column_map.values() if column not in positions]
        if missing:
            raise UserError(
                f"{self.source.label}: missing column(s) {', '.join(missing)}; header has "
                f"{', '.join(header) or '(none)'}"
            )
        return [positions[self.column_map[f]] if f in self.column_map else None for f in FIELDS]


def convert_json_list_cells(payload: object) -> Recipe | Rejected:
    """`CsvRecipeReader.convert` for layouts whose list cells must be lists (RecipeNLG)."""
    if isinstance(payload, Rejected):
        return payload
    return build_recipe(*payload, lists_only=True)


class _ReplayableLines:
    """The file's lines for `csv.reader`, remembering those of the current record so that they
    can be fed again, and counting physical lines (1-based, header included)."""

    def __init__(self, handle):
        self.handle = handle
        self.pending: list[tuple[int, str]] = []  # lines to read again, in order
        self.current: list[tuple[int, str]] = []
        self.next_number = 1
        self.record_start = 1

    def __iter__(self):
        return self

    def __next__(self) -> str:
        if self.pending:
            number, line = self.pending.pop(0)
        else:
            line = self.handle.readline()
            if not line:
                raise StopIteration
            number = self.next_number
            self.next_number += 1
        if not self.current:
            self.record_start = number
        self.current.append((number, line))
        return line

    def start_record(self) -> None:
        self.current = []

    @property
    def record_lines(self) -> int:
        return len(self.current)

    def replay_after_first(self) -> None:
        """Read every line of the current record but the first again."""
        self.pending = self.current[1:] + self.pending
        self.current = []
