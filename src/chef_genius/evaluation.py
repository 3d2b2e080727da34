"""Validation samples and the `evaluate` command (improvements 1 and 8).

During training, every evaluation generates recipes for the fixed prompts of the config and a few
validation prompts, prints them as the seed document shows, saves them as Markdown in the run
folder, and logs their mean recipe metrics (``recipe/...``). `evaluate_run` measures a finished
run or adapter on a prepared split: loss and perplexity, recipe metrics, ingredient coverage,
ROUGE-L and BLEU against the references, and the Chef Transformer protocol.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from pathlib import Path

import torch

from chef_genius.augment import canonical_prompt
from chef_genius.config import SEED_TEMPLATES, EvalConfig
from chef_genius.inference import generate, load_run
from chef_genius.losses import batch_loss_sums
from chef_genius.metrics import RecipeScores, mean_scores, score_text
from chef_genius.recipe import Recipe, parse_recipe, serialize, to_markdown
from chef_genius.reference_metrics import (
    chef_transformer_protocol,
    corpus_bleu,
    ingredient_coverage,
    recipe_text,
    rouge,
)
from chef_genius.training.data import Collator, load_split, plan_batches, tokenize_examples


@dataclass
class Sample:
    prompt: str
    text: str
    recipe: Recipe
    scores: RecipeScores


def sample_recipes(model, tokenizer, causal: bool, prompts: list[str], config: EvalConfig) -> list[Sample]:
    """Generate one recipe per prompt and score it."""
    texts = generate(model, tokenizer, prompts, causal, config.decoding, config.max_new_tokens)
    return [Sample(p, t[0], parse_recipe(t[0]), score_text(t[0])) for p, t in zip(prompts, texts, strict=True)]


def format_samples(step: int, samples: list[Sample]) -> str:
    """The console block of the seed document."""
    lines = ["🍳 Generating sample recipes..."]
    for sample in samples:
        short = sample.text if len(sample.text) <= 160 else sample.text[:157] + "..."
        lines += [f"   Prompt: {sample.prompt}", f"   Recipe: {short}",
                  f"   Quality: {sample.scores.overall_quality:.2f}", ""]
    return "\n".join(lines)


def samples_markdown(step: int, samples: list[Sample]) -> str:
    parts = [f"# Sample recipes at step {step}\n"]
    for sample in samples:
        metrics = ", ".join(f"{k.replace('_', ' ')} {v:.2f}" for k, v in sample.scores.as_dict().items())
        parts += [f"## Prompt: {sample.prompt}\n", f"Metrics: {metrics}\n",
                  to_markdown(sample.recipe).replace("# ", "### ", 1), f"Raw output: `{sample.text}`\n"]
    return "\n".join(parts)


def save_samples(folder: Path, step: int, samples: list[Sample]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"step-{step:08d}.md"
    path.write_text(samples_markdown(step, samples), encoding="utf-8")
    return path


@torch.no_grad()
def nll_sums(model, collator: Collator, batches: list[list[int]], causal: bool, pad_id: int,
             decoder_start_id: int | None, autocast=contextlib.nullcontext) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed plain NLL and real-token count over planned batches (the model in eval mode)."""
    device = next(model.parameters()).device
    total = torch.zeros((), device=device)
    count = torch.zeros((), device=device)
    was_training = model.training
    model.eval()
    for positions in batches:
        batch = {k: v.to(device) for k, v in collator(positions).items()}
        with autocast():
            _, nll, n = batch_loss_sums(model, batch, 0.0, causal, pad_id, decoder_start_id)
        total += nll
        count += n
    model.train(was_training)
    return total, count


def loss_on(model, tokenizer, causal: bool, prompts: list[str], targets: list[str], batch_size: int = 16,
            max_source: int = 512, max_target: int = 512) -> float:
    """Token-mean cross-entropy (no smoothing) of the targets given the prompts."""
    examples = tokenize_examples(tokenizer, prompts, targets, max_source, max_target, causal)
    collator = Collator(examples, tokenizer.pad_token_id, causal)
    start_id = getattr(getattr(model, "config", None), "decoder_start_token_id", None)
    batches = plan_batches(examples.lengths(), 0, 0, batch_size, shuffle=False)
    total, count = nll_sums(model, collator, batches, causal, tokenizer.pad_token_id, start_id)
    return float(total / count) if count > 0 else float("nan")


def evaluate_run(path: str | Path, data: str | Path, split: str = "test", max_examples: int = 50,
                 samples_per_input: int = 3, decoding: str = "greedy", max_new_tokens: int = 256,
                 templates: list[str] | None = None, seed: int = 0) -> dict:
    """All evaluation numbers for a run or adapter on a prepared split (see the module docstring)."""
    templates = templates or SEED_TEMPLATES
    loaded = load_run(path)
    table = load_split(Path(data), split)
    if len(table) == 0 and split == "test":
        split, table = "val", load_split(Path(data), "val")
    n = min(max_examples, len(table))
    rows = range(n)
    recipes = [table.recipe(i) for i in rows]
    prompts = [canonical_prompt(templates, r.title, r.ner) for r in recipes]
    references = [serialize(r) for r in recipes]
    val_loss = loss_on(loaded.model, loaded.tokenizer, loaded.causal, prompts, references)
    generated = [t[0] for t in generate(loaded.model, loaded.tokenizer, prompts, loaded.causal, decoding,
                                        max_new_tokens, seed=seed)]
    parsed = [parse_recipe(t) for t in generated]
    scores = mean_scores([score_text(t) for t in generated])
    with_names = [(r, p) for r, p in zip(recipes, parsed, strict=True) if r.ner]
    reference_texts = [recipe_text(r) for r in recipes]
    hypothesis_texts = [recipe_text(p) for p in parsed]
    # Chef Transformer protocol: food names in, several sampled recipes per input, best by COSIM.
    food_prompts = [", ".join(r.ner) if r.ner else r.title for r in recipes]
    sampled = generate(loaded.model, loaded.tokenizer, [canonical_prompt(templates, f, []) for f in food_prompts],
                       loaded.causal, "sample", max_new_tokens, num_return_sequences=samples_per_input, seed=seed)
    protocol = chef_transformer_protocol([[recipe_text(parse_recipe(t)) for t in s] for s in sampled], reference_texts)
    return {
        "run": str(path), "data": str(data), "split": split, "examples": n,
        "val_loss": val_loss, "val_perplexity": math.exp(min(val_loss, 50.0)),
        **scores.as_log(),
        "ingredient_coverage": (sum(ingredient_coverage(r.ner, p) for r, p in with_names) / len(with_names)
                                if with_names else None),
        "rougeL": sum(rouge(h, r)["rougeL"]
                      for h, r in zip(hypothesis_texts, reference_texts, strict=True)) / max(n, 1),
        "bleu": corpus_bleu(hypothesis_texts, reference_texts),
        "chef_transformer": {**protocol, "samples_per_input": samples_per_input},
    }


def format_evaluation(result: dict) -> str:
    rows = [(k, v) for k, v in result.items() if isinstance(v, (int, float)) and k != "examples"]
    rows += [(f"chef_transformer/{k}", v) for k, v in result["chef_transformer"].items()]
    width = max(len(k) for k, _ in rows)
    lines = [f"{result['run']} on {result['data']} ({result['split']}, {result['examples']} recipes)"]
    lines += [f"  {k:<{width}}  {v:.4f}" if isinstance(v, float) else f"  {k:<{width}}  {v}" for k, v in rows]
    return "\n".join(lines)
