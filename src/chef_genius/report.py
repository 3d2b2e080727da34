"""`chef-genius report RUN`: PNG plots of a run's metrics and a one-page HTML summary."""

from __future__ import annotations

import html
import json
from pathlib import Path

from chef_genius.errors import UserError

RECIPE_METRICS = ("ingredient_coherence", "instruction_quality", "completeness", "format_correctness",
                  "overall_quality")


def read_metrics(run: Path) -> list[dict]:
    path = run / "metrics.jsonl"
    if not path.exists():
        raise UserError(f"{run}: no metrics.jsonl (not a training run folder)")
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            rows.append(json.loads(line))
        except ValueError:
            continue  # a torn last line after a crash
    return rows


def _series(rows: list[dict], key: str) -> tuple[list[int], list[float]]:
    points = [(r["step"], r[key]) for r in rows if key in r and r[key] is not None]
    return [p[0] for p in points], [p[1] for p in points]


def _schedule_curve(run: Path) -> tuple[list[int], list[float]] | None:
    """The exact learning rate at every step, from the schedule recorded in run_summary.json."""
    from chef_genius.schedule import Schedule, lr_at

    path = run / "run_summary.json"
    if not path.exists():
        return None
    recorded = json.loads(path.read_text()).get("schedule")
    if not recorded:
        return None
    schedule = Schedule(**recorded)
    steps = list(range(schedule.total_steps))
    # The lr used by the step that ends at step s + 1 is lr_at(s): plot it at s + 1, as logged.
    return [s + 1 for s in steps], [lr_at(s, schedule) for s in steps]


def write_report(run: str | Path) -> Path:
    """Write plots/*.png and report.html into the run folder; return the HTML path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    run = Path(run)
    rows = read_metrics(run)
    plots = run / "plots"
    plots.mkdir(exist_ok=True)
    written = []

    def figure(name: str, title: str, series: list[tuple[str, str]], ylabel: str, step_plot: bool = False,
               twin: tuple[str, str] | None = None, exact: tuple[list[int], list[float]] | None = None) -> None:
        fig, axis = plt.subplots(figsize=(7, 3.6), dpi=110)
        drawn = False
        if exact:
            axis.plot(*exact, color="0.6", linewidth=1, label="schedule")
        for key, label in series:
            x, y = _series(rows, key)
            if x:
                (axis.step if step_plot else axis.plot)(x, y, label=label, marker="o" if len(x) < 30 else None,
                                                        **({"where": "post"} if step_plot else {}))
                drawn = True
        if twin:
            x, y = _series(rows, twin[0])
            if x:
                other = axis.twinx()
                other.step(x, y, where="post", color="tab:red", label=twin[1])
                other.set_ylabel(twin[1], color="tab:red")
                other.set_yticks([0, 1, 2], ["easy", "medium", "all"])
                drawn = True
        if not drawn:
            plt.close(fig)
            return
        axis.set_title(title)
        axis.set_xlabel("optimizer step")
        axis.set_ylabel(ylabel)
        axis.grid(alpha=0.3)
        if len(series) > 1 or exact:
            axis.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(plots / f"{name}.png")
        plt.close(fig)
        written.append((name, title))

    figure("train_loss", "Training loss", [("train/loss", "smoothed loss"), ("train/nll", "NLL")], "loss")
    figure("val_loss", "Validation loss", [("val_loss", "val_loss")], "loss")
    figure("learning_rate", "Learning rate (warmup, cosine with restarts)", [("train/learning_rate", "logged")], "lr",
           exact=_schedule_curve(run))
    figure("curriculum", "Curriculum: quality threshold and difficulty",
           [("curriculum/quality_threshold", "quality threshold")], "quality threshold", step_plot=True,
           twin=("curriculum/difficulty_level", "difficulty"))
    figure("recipe_metrics", "Recipe metrics of sample recipes",
           [(f"recipe/{m}", m.replace("_", " ")) for m in RECIPE_METRICS], "score (0-1)")
    page = run / "report.html"
    page.write_text(_html(run, rows, written), encoding="utf-8")
    return page


def flatten(value: object, prefix: str = "") -> list[tuple[str, str]]:
    """(name, text) rows of a value for a table: nested mappings become dotted names, lists are
    joined, numbers rounded; no raw Python dict or list is ever shown."""
    if isinstance(value, dict):
        rows: list[tuple[str, str]] = []
        for key, inner in value.items():
            rows += flatten(inner, f"{prefix}.{key}" if prefix else str(key))
        return rows
    if isinstance(value, (list, tuple)):
        if all(not isinstance(item, (dict, list, tuple)) for item in value):
            return [(prefix, ", ".join(_plain(item) for item in value) or "(none)")]
        return [row for i, item in enumerate(value) for row in flatten(item, f"{prefix}[{i}]")]
    return [(prefix, _plain(value))]


def _plain(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def evaluations(run: Path) -> list[tuple[str, dict]]:
    """The results `evaluate` wrote beside the run (evaluation-SPLIT[-CHECKPOINT].json), by name."""
    found = []
    for path in sorted(run.glob("evaluation-*.json")):
        try:
            result = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if isinstance(result, dict):
            found.append((path.name, result))
    return found


def _table(rows: list[tuple[str, str]]) -> str:
    return "<table>" + "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>" for k, v in rows) + \
        "</table>"


def _evaluation_html(name: str, result: dict) -> str:
    scores = {k: v for k, v in result.items() if k not in ("run", "data", "split", "samples")}
    title = (f"Evaluation on the {result.get('split', '?')} split ({result.get('examples', '?')} recipes of "
             f"{result.get('data', '?')}; BLEU, ROUGE and the recipe scores are fractions, 0-1): {name}")
    return f"<h2>{html.escape(title)}</h2>{_table(flatten(scores))}"


def _html(run: Path, rows: list[dict], plots: list[tuple[str, str]]) -> str:
    summary = json.loads((run / "run_summary.json").read_text()) if (run / "run_summary.json").exists() else {}
    last = {}
    for row in rows:
        last.update(row)
    facts = flatten(summary) + [
        (k, _plain(v)) for k, v in last.items() if k.startswith(("val_", "recipe/")) and isinstance(v, float)]
    samples = sorted((run / "samples").glob("step-*.md")) if (run / "samples").exists() else []
    sample_text = samples[-1].read_text(encoding="utf-8") if samples else "(no samples)"
    table = _table(facts) + "".join(_evaluation_html(name, result) for name, result in evaluations(run))
    images = "".join(f'<figure><img src="plots/{name}.png" alt="{html.escape(title)}"><figcaption>'
                     f"{html.escape(title)}</figcaption></figure>" for name, title in plots)
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>chef-genius run {html.escape(run.name)}</title>
<style>body{{font-family:sans-serif;max-width:1100px;margin:2em auto}}figure{{display:inline-block;margin:.5em}}
img{{width:520px}}th{{text-align:left;padding-right:1em}}pre{{background:#f6f6f6;padding:1em;white-space:pre-wrap}}</style>
</head><body><h1>chef-genius run: {html.escape(run.name)}</h1>{table}{images}
<h2>Latest sample recipes</h2><pre>{html.escape(sample_text)}</pre></body></html>
"""
