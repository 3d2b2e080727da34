"""Sample recipes and their scores: one home for training's validation samples and `evaluate`.

A `Sample` is a generated recipe with the seed's four metrics (`metrics`) and the checks that a
loop or a step-less list cannot pass (`usability`). `sample_metrics` gives the logged means:
``recipe/overall_quality`` and the other seed names, ``recipe/usable_rate``, ``recipe/repetition``...
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from chef_genius.config import EvalConfig
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


def score_generation(prompt: str, generation: Generation) -> Sample:
    parsed = parse_recipe_text(generation.text)
    return Sample(prompt, generation.text, parsed.recipe, score_parsed(parsed),
                  check(parsed.recipe, generation.stopped))


def sample_recipes(model, tokenizer, causal: bool, prompts: list[str], config: EvalConfig, seed: int = 0,
                   batch_size: int = 16) -> list[Sample]:
    """Generate one recipe per prompt with the configured decoding, and score it."""
    generations = generate_details(model, tokenizer, prompts, causal, config.decoding, config.max_new_tokens,
                                   batch_size=batch_size, seed=seed)
    return [score_generation(p, g[0]) for p, g in zip(prompts, generations, strict=True)]


def sample_metrics(samples: list[Sample]) -> dict[str, float]:
    """Mean seed metrics and usability checks of the samples, under their logged names."""
    return {**mean_scores([s.scores for s in samples]).as_log(), **summarize([s.checks for s in samples])}


def format_samples(step: int, samples: list[Sample]) -> str:
    """The console block of the seed document, with each recipe's usable verdict."""
    lines = [f"🍳 Sample recipes at step {step}:"]
    for sample in samples:
        short = sample.text if len(sample.text) <= 160 else sample.text[:157] + "..."
        verdict = "usable" if sample.checks.usable else "NOT usable"
        lines += [f"   Prompt: {sample.prompt}", f"   Recipe: {short}",
                  f"   Quality: {sample.scores.overall_quality:.2f}, {verdict}", ""]
    usable = sum(s.checks.usable for s in samples)
    lines.append(f"   {usable} of {len(samples)} usable")
    return "\n".join(lines)


def samples_markdown(step: int, samples: list[Sample]) -> str:
    parts = [f"# Sample recipes at step {step}\n"]
    for sample in samples:
        metrics = ", ".join(f"{k.replace('_', ' ')} {v:.2f}" for k, v in sample.scores.as_dict().items())
        checks = ", ".join(f"{k.replace('_', ' ')} {v:.2f}" if isinstance(v, float) else f"{k} {v}"
                           for k, v in sample.checks.as_dict().items())
        parts += [f"## Prompt: {sample.prompt}\n", f"Metrics: {metrics}\n", f"Checks: {checks}\n",
                  to_markdown(sample.recipe).replace("# ", "### ", 1), f"Raw output: `{sample.text}`\n"]
    return "\n".join(parts)


def save_samples(folder: Path, step: int, samples: list[Sample]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"step-{step:08d}.md"
    path.write_text(samples_markdown(step, samples), encoding="utf-8")
    return path
