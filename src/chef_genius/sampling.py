"""Sample recipes and their scores: one home for training's validation samples and `evaluate`.

A `Sample` is a generated recipe with the seed's four metrics (`metrics`), the form checks that a
loop or a step-less list cannot pass (`usability`) and the cookable verdict (`cookable`).
`sample_metrics` gives the logged means: ``recipe/overall_quality`` and the other seed names,
``recipe/usable_rate``, ``recipe/repetition``..., ``recipe/cookable_rate`` and each cookable check's
failure rate (``cookable/fails/<check>``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from chef_genius.config_schema import EvalConfig
from chef_genius.cookable import Cookable, check_cookable, request_foods, summarize_cookable
from chef_genius.families import ModelFamily
from chef_genius.inference import Generation, generate_details
from chef_genius.metrics import RecipeScores, mean_scores, score_parsed
from chef_genius.recipe import Recipe, parse_recipe_text, to_markdown
from chef_genius.usability import Usability, check, summarize


@dataclass
class Sample:
    prompt: str
    text: str
    recipe: Recipe
    scores: RecipeScores
    checks: Usability
    cookable: Cookable


def score_generation(prompt: str, generation: Generation, foods=None) -> Sample:
    """Score one generated recipe; ``foods`` are the requested food names (default: those the
    prompt names after its last "with")."""
    parsed = parse_recipe_text(generation.text)
    foods = request_foods(prompt) if foods is None else foods
    return Sample(prompt, generation.text, parsed.recipe, score_parsed(parsed),
                  check(parsed.recipe, generation.stopped), check_cookable(parsed.recipe, foods, generation.stopped))


def sample_recipes(model, tokenizer, family: ModelFamily, prompts: list[str], config: EvalConfig, seed: int = 0,
                   batch_size: int = 16, foods: list | None = None) -> list[Sample]:
    """Generate one recipe per prompt with the configured decoding (best of ``config.best_of``
    candidates, grounded decoding when ``config.grounded`` > 0), and score it."""
    from chef_genius.best_of import best_index, mean_logprobs, rank_key

    n = config.best_of
    generations = generate_details(model, tokenizer, prompts, family, config.decoding, config.max_new_tokens,
                                   num_return_sequences=n, batch_size=batch_size, seed=seed,
                                   grounded=config.grounded, engine=config.engine)
    foods = foods if foods is not None else [None] * len(prompts)
    scored = [[score_generation(p, c, names) for c in candidates]
              for p, candidates, names in zip(prompts, generations, foods, strict=True)]
    if n == 1:
        return [row[0] for row in scored]
    # every candidate's log-likelihood in one batched pass, then the best of each prompt's n
    logprobs = mean_logprobs(model, tokenizer, family, [p for p in prompts for _ in range(n)],
                             [c.text for candidates in generations for c in candidates], batch_size=batch_size)
    return [row[best_index([rank_key(s.cookable, s.checks, logprobs[i * n + j]) for j, s in enumerate(row)])]
            for i, row in enumerate(scored)]


def sample_metrics(samples: list[Sample]) -> dict[str, float]:
    """Mean seed metrics, usability checks and cookable verdicts of the samples, under their logged names."""
    return {**mean_scores([s.scores for s in samples]).as_log(), **summarize([s.checks for s in samples]),
            **summarize_cookable([s.cookable for s in samples])}


def format_samples(step: int, samples: list[Sample]) -> str:
    """The console block of the seed document, with each recipe's usable verdict."""
    lines = [f"🍳 Sample recipes at step {step}:"]
    for sample in samples:
        short = sample.text if len(sample.text) <= 160 else sample.text[:157] + "..."
        verdict = "usable" if sample.checks.usable else "NOT usable"
        verdict += ", cookable" if sample.cookable.cookable else ", NOT cookable: " + "; ".join(
            sample.cookable.failed.values())[:200]
        lines += [f"   Prompt: {sample.prompt}", f"   Recipe: {short}",
                  f"   Quality: {sample.scores.overall_quality:.2f}, {verdict}", ""]
    usable = sum(s.checks.usable for s in samples)
    cookable = sum(s.cookable.cookable for s in samples)
    lines.append(f"   {usable} of {len(samples)} usable, {cookable} cookable (an automatic check; a cook's reading "
                 "is the judge)")
    return "\n".join(lines)


def samples_markdown(step: int, samples: list[Sample]) -> str:
    parts = [f"# Sample recipes at step {step}\n"]
    for sample in samples:
        metrics = ", ".join(f"{k.replace('_', ' ')} {v:.2f}" for k, v in sample.scores.as_dict().items())
        checks = ", ".join(f"{k.replace('_', ' ')} {v:.2f}" if isinstance(v, float) else f"{k} {v}"
                           for k, v in sample.checks.as_dict().items())
        checks += f", cookable {sample.cookable.cookable}" + "".join(
            f"; {name}: {why}" for name, why in sample.cookable.failed.items())
        parts += [f"## Prompt: {sample.prompt}\n", f"Metrics: {metrics}\n", f"Checks: {checks}\n",
                  to_markdown(sample.recipe).replace("# ", "### ", 1), f"Raw output: `{sample.text}`\n"]
    return "\n".join(parts)


def save_samples(folder: Path, step: int, samples: list[Sample]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"step-{step:08d}.md"
    path.write_text(samples_markdown(step, samples), encoding="utf-8")
    return path
