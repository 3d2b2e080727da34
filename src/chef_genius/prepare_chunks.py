"""Recipe rows in chunks, converted and scored (keys, split, difficulty, quality) for `prepare`: in
worker processes when the sources are large, each chunk coming back as one Arrow batch of the
dataset's rows (`SCHEMA`)."""

from __future__ import annotations

import multiprocessing as mp
import os
from collections.abc import Iterator
from dataclasses import dataclass

import pyarrow as pa

from chef_genius.quality import difficulty, exact_key, near_duplicate_key, quality_score, split_of
from chef_genius.sources import Rejected

CHUNK_ROWS = 2000
PARALLEL_MIN_BYTES = 8 * 2**20  # below this, starting workers costs more than it saves

SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("title", pa.string()),
        ("ingredients", pa.list_(pa.string())),
        ("steps", pa.list_(pa.string())),
        ("ner", pa.list_(pa.string())),
        ("source", pa.string()),
        ("quality", pa.float32()),
        ("difficulty", pa.int8()),
    ]
)


@dataclass
class _ScoredChunk:
    """What a worker returns for one chunk: rejects, and for the converted recipes their keys,
    split, difficulty and quality plus the rows as one Arrow batch (cheap to send between
    processes, unlike Python lists of strings)."""

    rejects: list[tuple[int, Rejected]]
    exact: list[int]
    near: list[int]
    split: list[str]
    level: list[int]
    quality: list[float]
    batch: pa.RecordBatch


def _convert_and_score(job: tuple) -> _ScoredChunk:
    convert, chunk, file_name, val_fraction, test_fraction = job
    scored = _ScoredChunk([], [], [], [], [], [], None)
    columns: list[list] = [[] for _ in SCHEMA]
    for position, payload in chunk:
        recipe = convert(payload)
        if isinstance(recipe, Rejected):
            scored.rejects.append((position, recipe))
            continue
        near = near_duplicate_key(recipe)
        quality = quality_score(recipe)
        level = int(difficulty(recipe))
        scored.exact.append(exact_key(recipe))
        scored.near.append(near)
        scored.split.append(split_of(near, val_fraction, test_fraction))
        scored.level.append(level)
        scored.quality.append(quality)
        row = (f"{near:016x}", recipe.title, recipe.ingredients, recipe.steps, recipe.ner,
               recipe.source or file_name, quality, level)
        for column, value in zip(columns, row, strict=True):
            column.append(value)
    scored.batch = pa.record_batch(columns, schema=SCHEMA)
    return scored


def _chunks(rows: Iterator[tuple[int, object]], size: int = CHUNK_ROWS) -> Iterator[list]:
    chunk = []
    for row in rows:
        chunk.append(row)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _pool(workers: int | None, total_bytes: int):
    """A process pool, or None for small inputs or ``workers == 0`` (work stays in-process)."""
    if workers is None:
        workers = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    if workers <= 1 or total_bytes < PARALLEL_MIN_BYTES:
        return None
    method = "fork" if "fork" in mp.get_all_start_methods() else "spawn"
    return mp.get_context(method).Pool(workers)
