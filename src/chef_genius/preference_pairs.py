"""`chef-genius preference-pairs`: preference pairs from a model's own mistakes.

For training prompts of a prepared split (a fixed random subset, `evaluation.held_out_rows`), the
run writes ``samples`` recipes each (`inference.generate_details`, the run's decoding); the real
recipe (`recipe.serialize`, the training target) is "chosen", and each sample the cookable
verdict rejects (`cookable.check_cookable`, the requested foods included) is "rejected": one pair
per rejected sample. ``keep_all`` keeps every sample, cookable or not. Prompts are the run's
first template with the canonical request (`augment.canonical_prompt`), as validation and
`generate` prompt it. The pairs file is JSONL (`preference.read_pairs` reads it back): prompt,
chosen, rejected, and for people the row, the sample's index and its failed checks.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from chef_genius.augment import canonical_prompt
from chef_genius.errors import UserError


@dataclass
class PairsReport:
    prompts: int
    samples: int
    rejected: int
    pairs: int
    out: Path


def check_output(out: Path, force: bool) -> None:
    """Refuse an existing output file (without ``force``) or a folder, before any work."""
    if out.is_dir():
        raise UserError(f"{out}: is a folder; --out names the pairs file to write")
    if out.exists() and not force:
        raise UserError(f"{out}: exists; pass --force to replace it")
    if not out.parent.is_dir():
        raise UserError(f"{out.parent}: no such folder for --out")


def build_pairs(run: Path, data: Path, split: str, max_examples: int, out: Path, templates: list[str],
                samples: int = 1, keep_all: bool = False, decoding: str = "careful", max_new_tokens: int = 512,
                seed: int = 0, force: bool = False, batch_size: int = 16) -> PairsReport:
    """Sample the run's recipes for ``max_examples`` prompts of ``split`` and write the pairs to ``out``.

    Raises:
        UserError: bad arguments, an existing ``out`` without ``force``, an unreadable run or dataset.
    """
    from chef_genius.dataset.table import load_split
    from chef_genius.evaluation import held_out_rows, requested_names
    from chef_genius.inference import generate_details, load_run
    from chef_genius.recipe import serialize
    from chef_genius.sampling import score_generation

    if min(max_examples, samples, max_new_tokens, batch_size) <= 0:
        raise UserError("--max-examples, --samples, --max-new-tokens and --batch-size must be positive")
    check_output(out, force)
    table = load_split(data, split)
    if len(table) == 0:
        raise UserError(f"{data}: the {split} split is empty")
    loaded = load_run(run)
    rows = held_out_rows(len(table), max_examples, seed)
    recipes = [table.recipe(i) for i in rows]
    names = [requested_names(r) for r in recipes]
    prompts = [canonical_prompt(templates, r.title, n) for r, n in zip(recipes, names, strict=True)]
    generations = generate_details(loaded.model, loaded.tokenizer, prompts, loaded.family, decoding, max_new_tokens,
                                   num_return_sequences=samples, batch_size=batch_size, seed=seed)
    lines, rejected = [], 0
    for row, recipe, prompt, foods, candidates in zip(rows, recipes, prompts, names, generations, strict=True):
        chosen = serialize(recipe)
        for k, generation in enumerate(candidates):
            verdict = score_generation(prompt, generation, foods).cookable
            rejected += not verdict.cookable
            text = generation.text.strip()
            if (verdict.cookable and not keep_all) or not text or text == chosen.strip():
                continue
            lines.append(json.dumps({"prompt": prompt, "chosen": chosen, "rejected": text, "row": row, "sample": k,
                                     "cookable": verdict.cookable, "failed": sorted(verdict.failed)},
                                    ensure_ascii=False))
    if not lines:
        raise UserError(f"none of the {len(prompts) * samples} samples was rejected by the cookable verdict: no pairs, "
                        f"{out} not written (--keep-all keeps cookable samples too)")
    _write(out, lines)
    return PairsReport(len(prompts), len(prompts) * samples, rejected, len(lines), out)


def _write(out: Path, lines: list[str]) -> None:
    """Written beside, then renamed: a kill never leaves half a pairs file."""
    staging = out.with_name(f".{out.name}.partial-{os.getpid()}")
    try:
        staging.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
        os.replace(staging, out)
    except OSError as error:
        staging.unlink(missing_ok=True)
        raise UserError(f"{out}: cannot write the pairs: {error.strerror or error}") from None
