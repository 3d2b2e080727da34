"""`chef-genius prepare`: recipe files in, a scored, deduplicated, split dataset out.

Output folder::

    train.arrow val.arrow test.arrow   Arrow IPC files, memory-mappable, one row per recipe
    data_report.json                   counts, rejects by reason, quality histogram, thresholds
    rejects.jsonl                      every rejected row: file, line/item, reason, detail
    .chef-genius-dataset               marker: chef-genius wrote this folder (JSON, files listed)

The dataset is written into a staging folder and moved into place at the end (`outputs`), so an
interrupted or failed run never leaves a half-written dataset where training would find it, and
never deletes or overwrites a file prepare did not write: a new folder is renamed into place; into
an empty folder, or one holding the marker, prepare's files are moved one by one, other files
stay; a non-empty folder without the marker needs ``overwrite`` (its files stay too). A run that
keeps no recipe fails and leaves the destination as it was.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa

from chef_genius.errors import UserError
from chef_genius.outputs import OutputFolder
from chef_genius.prepare_chunks import SCHEMA, _chunks, _convert_and_score, _pool, _ScoredChunk
from chef_genius.quality import Difficulty
from chef_genius.sources import open_sources, raw_rows

SPLITS = ("train", "val", "test")
THRESHOLDS = (0.50, 0.55, 0.60, 0.65, 0.70, 0.75)
HISTOGRAM_BINS = 20
MARKER = ".chef-genius-dataset"
OUTPUT_FILES = tuple(f"{s}.arrow" for s in SPLITS) + ("data_report.json", "rejects.jsonl", MARKER)


@dataclass
class PrepareOptions:
    """Options of `prepare`.

    Attributes:
        val_fraction: share of recipes (by stable hash) in the validation split.
        test_fraction: share in the test split.
        fmt: reader format for every source ("auto" detects).
        columns: column map for CSV sources without known column names.
        progress: show progress bars.
        workers: processes for conversion and scoring; None uses every available core, 0 or 1
            keeps the work in this process.
        overwrite: write into a non-empty folder that holds no chef-genius dataset (its other
            files are kept).
        encoding: text encoding of every source; None detects it per file (UTF-8 with or
            without a byte-order mark, UTF-16 with one, else cp1252).
    """

    val_fraction: float = 0.10
    test_fraction: float = 0.05
    fmt: str = "auto"
    columns: str | None = None
    progress: bool = True
    workers: int | None = None
    overwrite: bool = False
    encoding: str | None = None

    def __post_init__(self) -> None:
        for name in ("val_fraction", "test_fraction"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise UserError(f"{name.replace('_', '-')} must be in [0, 1), got {getattr(self, name)}")
        if self.val_fraction + self.test_fraction >= 1.0:
            raise UserError("val-fraction + test-fraction must leave some training data")


@dataclass
class _Tally:
    """Running counts that become the data report."""

    rows_read: int = 0
    kept: int = 0
    rejected: Counter = field(default_factory=Counter)
    exact_duplicates: int = 0
    near_duplicates: int = 0
    per_source: Counter = field(default_factory=Counter)
    splits: Counter = field(default_factory=Counter)
    histogram: list[int] = field(default_factory=lambda: [0] * HISTOGRAM_BINS)
    # thresholds[split][threshold index][difficulty]
    thresholds: dict = field(default_factory=lambda: {s: [[0] * 3 for _ in THRESHOLDS] for s in SPLITS})
    difficulty: Counter = field(default_factory=Counter)
    files: list[dict] = field(default_factory=list)


class _SplitWriter:
    """One Arrow IPC file per split, written batch by batch."""

    def __init__(self, folder: Path):
        self.writers = {s: pa.ipc.new_file(str(folder / f"{s}.arrow"), SCHEMA) for s in SPLITS}

    def write(self, split: str, batch: pa.RecordBatch) -> None:
        self.writers[split].write_batch(batch)

    def close(self) -> None:
        for writer in self.writers.values():
            writer.close()


def prepare(sources: list[Path], out: Path, options: PrepareOptions | None = None) -> dict:
    """Read, clean, score, deduplicate and split recipes; write the dataset and its report.

    Conversion and scoring run in ``options.workers`` processes on chunks of rows; results come
    back in file order, so deduplication (first occurrence wins) and the output are the same
    for any number of workers.

    Args:
        sources: recipe files (any supported format).
        out: output folder (see the module docstring for what happens to an existing one).
        options: see `PrepareOptions`.

    Returns:
        The data report (also written to ``out/data_report.json``).

    Raises:
        UserError: a source cannot be read at all or lacks the needed columns; no recipe was
            kept; ``out`` is a file, cannot be written, or is a non-empty folder that holds no
            dataset (without ``options.overwrite``); an output file would replace a source.
    """
    options = options or PrepareOptions()
    sources = [Path(path) for path in sources]
    readers = [reader for path in sources
               for reader in open_sources(path, options.fmt, options.columns, options.progress, options.encoding)]
    destination = OutputFolder(Path(out), MARKER, "dataset", options.overwrite)
    if destination.check() != "absent":
        destination.check_outputs(OUTPUT_FILES, sources)
    staging = destination.stage()
    started = time.perf_counter()
    tally = _Tally()
    dedup = _Deduplicator()
    pool = None
    try:
        writer = _SplitWriter(staging)
        pool = _pool(options.workers, sum(Path(p).stat().st_size for p in sources))
        with open(staging / "rejects.jsonl", "w", encoding="utf-8") as rejects:
            for reader in readers:
                label = reader.source.label
                before = (tally.rows_read, tally.kept, sum(tally.rejected.values()))
                jobs = ((reader.convert, chunk, Path(label).name, options.val_fraction, options.test_fraction)
                        for chunk in _chunks(raw_rows(reader)))
                results = pool.imap(_convert_and_score, jobs) if pool else map(_convert_and_score, jobs)
                for scored in results:
                    tally.rows_read += len(scored.rejects) + len(scored.exact)
                    for position, rejected in scored.rejects:
                        tally.rejected[rejected.reason] += 1
                        record = {"file": label, reader.position_name: position,
                                  "reason": rejected.reason, "detail": rejected.detail}
                        rejects.write(json.dumps(record, ensure_ascii=False) + "\n")
                    _keep_new(scored, dedup, tally, writer)
                rows, kept, rejected = (now - then for now, then in zip(
                    (tally.rows_read, tally.kept, sum(tally.rejected.values())), before, strict=True))
                tally.files.append({"path": label, "format": reader.format_name, "encoding": reader.encoding,
                                    "rows_read": rows, "kept": kept, "rejected": rejected,
                                    "duplicates": rows - kept - rejected})
        writer.close()
        if tally.kept == 0:
            raise UserError(_nothing_kept(tally, destination.path))
        report = _report(tally, options, time.perf_counter() - started)
        (staging / "data_report.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    except BaseException:
        destination.discard(staging)
        raise
    finally:
        if pool:
            pool.terminate()
    destination.install(staging, sources)
    return report


def _nothing_kept(tally: _Tally, out: Path) -> str:
    if tally.rows_read == 0:
        return f"prepare: the sources hold no rows; nothing written, {out} left as it was"
    top = tally.rejected.most_common()
    reasons = ", ".join(f"{reason} {count:,}" for reason, count in top[:3]) + (", ..." if len(top) > 3 else "")
    rows = f"{tally.rows_read:,} row{'s' if tally.rows_read != 1 else ''}"
    return (f"prepare: no recipe kept ({rows} read; rejected: {reasons}); "
            f"nothing written, {out} left as it was")


class _Deduplicator:
    """Exact and near duplicates by 64-bit keys; the first occurrence is kept."""

    def __init__(self) -> None:
        self.exact: set[int] = set()
        self.near: set[int] = set()

    def is_new(self, exact: int, near: int, tally: _Tally) -> bool:
        if exact in self.exact:
            tally.exact_duplicates += 1
            return False
        self.exact.add(exact)
        if near in self.near:
            tally.near_duplicates += 1
            return False
        self.near.add(near)
        return True


def _keep_new(scored: _ScoredChunk, dedup: _Deduplicator, tally: _Tally, writer: _SplitWriter) -> None:
    """Count the chunk's new recipes and send each to its split's file."""
    keep = {split: [False] * len(scored.exact) for split in SPLITS}
    sources = scored.batch.column("source").to_pylist()
    for i, (exact, near, split, level, quality) in enumerate(
        zip(scored.exact, scored.near, scored.split, scored.level, scored.quality, strict=True)
    ):
        if not dedup.is_new(exact, near, tally):
            continue
        keep[split][i] = True
        tally.kept += 1
        tally.per_source[sources[i]] += 1
        tally.splits[split] += 1
        tally.difficulty[Difficulty(level).label] += 1
        tally.histogram[min(int(quality * HISTOGRAM_BINS), HISTOGRAM_BINS - 1)] += 1
        counts = tally.thresholds[split]
        for t, threshold in enumerate(THRESHOLDS):
            if quality >= threshold - 1e-9:
                counts[t][level] += 1
    for split, mask in keep.items():
        if any(mask):
            writer.write(split, scored.batch.filter(pa.array(mask)))


def _report(tally: _Tally, options: PrepareOptions, seconds: float) -> dict:
    levels = [d.label for d in Difficulty]
    thresholds = {}
    for i, threshold in enumerate(THRESHOLDS):
        entry = {}
        for split in SPLITS:
            by_level = dict(zip(levels, tally.thresholds[split][i], strict=True))
            entry[split] = {"total": sum(by_level.values()), **by_level}
        thresholds[f"{threshold:.2f}"] = entry
    return {
        "rows_read": tally.rows_read,
        "kept": tally.kept,
        "rejected_total": sum(tally.rejected.values()),
        "rejected": dict(tally.rejected.most_common()),
        "duplicates": {"exact": tally.exact_duplicates, "near": tally.near_duplicates},
        "splits": {s: tally.splits[s] for s in SPLITS},
        "per_source": dict(tally.per_source.most_common()),
        "difficulty": {label: tally.difficulty[label] for label in levels},
        "quality_histogram": {
            "bin_edges": [round(i / HISTOGRAM_BINS, 2) for i in range(HISTOGRAM_BINS + 1)],
            "counts": tally.histogram,
        },
        "thresholds": thresholds,
        "files": tally.files,
        "options": {"val_fraction": options.val_fraction, "test_fraction": options.test_fraction},
        "seconds": round(seconds, 3),
        "rows_per_second": round(tally.rows_read / seconds) if seconds > 0 else None,
    }


def format_report(report: dict) -> str:
    """A human summary of a data report."""
    lines = [
        f"rows read  {report['rows_read']:>10,}",
        f"kept       {report['kept']:>10,}   "
        + "  ".join(f"{s} {n:,}" for s, n in report["splits"].items()),
        f"rejected   {report['rejected_total']:>10,}   "
        + ("  ".join(f"{r} {n:,}" for r, n in report["rejected"].items()) or "-"),
        f"duplicates {sum(report['duplicates'].values()):>10,}   "
        f"exact {report['duplicates']['exact']:,}  near {report['duplicates']['near']:,}",
        "",
        "per source: " + ", ".join(f"{s} {n:,}" for s, n in list(report["per_source"].items())[:8]),
        "difficulty: " + ", ".join(f"{d} {n:,}" for d, n in report["difficulty"].items()),
        "",
        "quality histogram",
    ]
    counts = report["quality_histogram"]["counts"]
    edges = report["quality_histogram"]["bin_edges"]
    peak = max(counts) or 1
    for i, count in enumerate(counts):
        if count:
            lines.append(f"  {edges[i]:.2f}-{edges[i + 1]:.2f} {count:>9,} {'#' * max(1, round(40 * count / peak))}")
    lines += ["", "train recipes at each quality threshold (easy / medium / hard)"]
    for threshold, entry in report["thresholds"].items():
        train = entry["train"]
        lines.append(f"  >= {threshold}  {train['total']:>9,}   {train['easy']:,} / {train['medium']:,} / "
                     f"{train['hard']:,}")
    lines.append(f"\n{report['rows_read']:,} rows in {report['seconds']:.1f} s "
                 f"({report['rows_per_second'] or 0:,} rows/s)")
    return "\n".join(lines)
