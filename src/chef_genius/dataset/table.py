"""A prepared split, read in place: memory-mapped Arrow columns, rows read on demand.

`prepare` writes each split as an Arrow IPC file. Training maps it (nothing is copied) and
reads the rows an epoch needs a chunk at a time (`RecipeTable.rows`), so memory does not grow
with the corpus: only the quality and difficulty columns (5 bytes a recipe) are held as arrays.

Recipes whose source has no food names (openrecipes, Wikibooks) get their ingredients' food
words (`usability.food_names_of`) as they are read, so that requests can name foods ("a dish
with chicken, rice and lemon") for every recipe.
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from chef_genius.errors import UserError
from chef_genius.recipe import Recipe, serialize
from chef_genius.usability import food_names_of

CHUNK_ROWS = 50_000  # rows turned into Python objects at a time


@contextlib.contextmanager
def many_objects():
    """No cyclic garbage collection in the block: reading rows makes lists and strings by the
    hundred thousand (none in a reference cycle), and each allocation burst set off collections
    that walked the whole heap, half the time of building an epoch's prompts."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


class RowColumn(Sequence):
    """A column read lazily by row, a chunk at a time when iterated (a list's read-only face)."""

    def __init__(self, read: Callable[[np.ndarray], list], length: int):
        self._read = read
        self._length = length

    def __len__(self) -> int:
        return self._length

    def __getitem__(self, i):
        if isinstance(i, slice):
            return self._read(np.arange(self._length, dtype=np.int64)[i])
        if not -self._length <= i < self._length:
            raise IndexError(i)
        return self._read(np.array([i % self._length], dtype=np.int64))[0]

    def __iter__(self) -> Iterator:
        for start in range(0, self._length, CHUNK_ROWS):
            yield from self._read(np.arange(start, min(start + CHUNK_ROWS, self._length), dtype=np.int64))


class RecipeTable:
    """The columns of one prepared split that training needs.

    Attributes:
        path: the split's Arrow file (None for a table built in memory).
        quality, difficulty: per-recipe scores, as arrays (the curriculum selects on them).
        titles, ner: lazy columns; ``ner`` holds the food names a request may name (filled in
            from the ingredients where the source has none).
    """

    def __init__(self, table: pa.Table, path: Path | None = None):
        self.table = table
        self.path = path
        self.quality = table.column("quality").to_numpy().astype(np.float32, copy=False)
        self.difficulty = table.column("difficulty").to_numpy().astype(np.int8, copy=False)
        self.titles = RowColumn(lambda rows: self.take(rows, "title"), len(table))
        self.ner = RowColumn(self.food_names, len(table))

    def __len__(self) -> int:
        return self.table.num_rows

    def take(self, rows: np.ndarray, column: str) -> list:
        """One column's values at ``rows`` (row indices), as Python objects."""
        return self.table.column(column).take(pa.array(rows, type=pa.int64())).to_pylist()

    def food_names(self, rows: np.ndarray) -> list[list[str]]:
        """The NER column for ``rows``, or the ingredients' food words where it is empty."""
        names = self.table.column("ner").take(pa.array(rows, type=pa.int64()))
        empty = np.flatnonzero(pc.list_value_length(names).to_numpy(zero_copy_only=False) == 0)
        names = names.to_pylist()
        if len(empty):
            for at, ingredients in zip(empty.tolist(), self.take(np.asarray(rows)[empty], "ingredients"),
                                       strict=True):
                names[at] = food_names_of(ingredients)
        return names

    def rows(self, rows: np.ndarray) -> list[Recipe]:
        """The recipes at ``rows`` (row indices), in that order."""
        titles, ingredients, steps = (self.take(rows, c) for c in ("title", "ingredients", "steps"))
        return [Recipe(*fields) for fields in zip(titles, ingredients, steps, self.food_names(rows), strict=True)]

    def recipe(self, i: int) -> Recipe:
        return self.rows(np.array([i], dtype=np.int64))[0]

    def targets(self, start: int, stop: int) -> list[str]:
        """Training targets (`recipe.serialize`) of rows ``start`` to ``stop``."""
        part = self.table.slice(start, stop - start)
        columns = (part.column(c).to_pylist() for c in ("title", "ingredients", "steps"))
        return [serialize(Recipe(*fields)) for fields in zip(*columns, strict=True)]


def load_split(folder: Path, split: str) -> RecipeTable:
    """Map a split of a prepared dataset (memory-mapped Arrow, nothing read until used).

    Raises:
        UserError: the folder or the split file is missing or unreadable.
    """
    path = Path(folder) / f"{split}.arrow"
    if not path.exists():
        raise UserError(f"{folder}: not a prepared dataset (no {split}.arrow); run `chef-genius prepare` first")
    try:
        table = pa.ipc.open_file(pa.memory_map(str(path))).read_all()
    except (pa.ArrowInvalid, OSError) as error:
        raise UserError(f"{path}: cannot be read: {error}") from None
    return RecipeTable(table, path)
