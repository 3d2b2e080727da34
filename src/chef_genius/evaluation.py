"""The `evaluate` command (improvements 1 and 8): a finished run, adapter or model measured on a
fixed random subset of a prepared split: loss and perplexity, the seed's recipe metrics, the
usability checks, requested food names covered, ROUGE-L and BLEU against the references, and the
Chef Transformer protocol. Samples and their scores come from `chef_genius.sampling`, shared with
training's validation samples.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from chef_genius.augment import canonical_prompt, request_of, request_text, with_references
from chef_genius.config_schema import SEED_TEMPLATES, EvalConfig
from chef_genius.dataset.collate import Collator, load_split, plan_batches, tokenize_examples
from chef_genius.families import ModelFamily
from chef_genius.inference import generate, load_run
from chef_genius.losses import nll_sums
from chef_genius.recipe import Recipe, parse_recipe, serialize
from chef_genius.reference_metrics import (
    chef_transformer_protocol,
    corpus_bleu,
    ingredient_coverage,
    recipe_text,
    rouge,
)
from chef_genius.sampling import sample_metrics, sample_recipes
from chef_genius.usability import food_names


def loss_on(model, tokenizer, family: ModelFamily, prompts: list[str], targets: list[str], batch_size: int = 16,
            max_source: int = 512, max_target: int = 512) -> float:
    """Token-mean cross-entropy (no smoothing) of the targets given the prompts."""
    pad_id = tokenizer.pad_token_id
    examples = tokenize_examples(tokenizer, prompts, targets, max_source, max_target, family)
    collator = Collator(examples, pad_id, family)
    batches = plan_batches(examples.lengths(), 0, 0, batch_size, shuffle=False)
    total, count = nll_sums(model, collator, batches, family, pad_id, family.decoder_start(model, pad_id))
    return float(total / count) if count > 0 else float("nan")


def held_out_rows(size: int, n: int, seed: int = 0) -> list[int]:
    """A fixed random subset of a split (the same rows for every model and setting compared),
    in row order; the first rows would favour whichever source the file lists first."""
    if n >= size:
        return list(range(size))
    return sorted(np.random.default_rng(seed).choice(size, n, replace=False).tolist())


def requested_names(recipe: Recipe) -> list[str]:
    """Food names a request names: the NER column, else the ingredients' food words (`load_split`
    fills these in already; recipes from elsewhere may lack them)."""
    return list(recipe.ner) or food_names(recipe)


def evaluate_loaded(model, tokenizer, family: ModelFamily, recipes: list[Recipe], templates: list[str],
                    decoding: str, max_new_tokens: int, samples_per_input: int = 3,
                    protocol_examples: int | None = None, seed: int = 0, batch_size: int = 32,
                    keep_samples: int = 10, split: str = "val", max_source_tokens: int = 512,
                    max_target_tokens: int = 512, best_of: int = 1, grounded: float = 0.0,
                    engine: str = EvalConfig.engine, judge=None, retrieval=None) -> dict:
    """Every number of `evaluate_run` for a loaded model on reference recipes of ``split``: the
    loss and perplexity are named by it (``test_loss`` on the test split) and measured with
    prompts and targets cut at the token limits given (a run's own, so that ``val_loss`` matches
    training's). BLEU is a fraction (0-1), like every other score. ``judge``: a
    `lm_judge.JudgeReader`, whose verdict on each sample adds ``cookable_lm_rate`` (cookable and
    passed by it) and ``lm_judge_pass_rate``. ``retrieval``: a run's reference recipes
    (`chef_genius.retrieval.References`), for a run trained with them."""
    names = [requested_names(r) for r in recipes]
    prompts = [canonical_prompt(templates, r.title, n) for r, n in zip(recipes, names, strict=True)]
    if retrieval is not None:
        prompts = with_references(prompts, retrieval.for_requests([r.title for r in recipes], names))
    references = [serialize(r) for r in recipes]
    loss = loss_on(model, tokenizer, family, prompts, references, max_source=max_source_tokens,
                   max_target=max_target_tokens)
    config = EvalConfig(decoding=decoding, max_new_tokens=max_new_tokens, best_of=best_of, grounded=grounded,
                        engine=engine)
    samples = sample_recipes(model, tokenizer, family, prompts, config, seed=seed, batch_size=batch_size,
                             foods=names)
    with_names = [(n, s.recipe) for n, s in zip(names, samples, strict=True) if n]
    reference_texts = [recipe_text(r) for r in recipes]
    hypothesis_texts = [recipe_text(s.recipe) for s in samples]
    # Chef Transformer protocol: food names in ("a dish with ..."), several samples per input drawn
    # with its decoding, the best by COSIM kept; protocol_examples=0 leaves it out.
    k = len(recipes) if protocol_examples is None else min(protocol_examples, len(recipes))
    protocol = None
    if k > 0:
        food_prompts = [templates[0].format(text=request_text(r.title, n, form=2))
                        for r, n in zip(recipes[:k], names[:k], strict=True)]
        if retrieval is not None:  # the request names foods only: so does the query
            food_prompts = with_references(food_prompts, retrieval.for_requests([""] * k, names[:k]))
        sampled = generate(model, tokenizer, food_prompts, family, "chef", max_new_tokens,
                           num_return_sequences=samples_per_input, seed=seed, batch_size=batch_size,
                           engine=engine)
        protocol = {**chef_transformer_protocol([[recipe_text(parse_recipe(t)) for t in s] for s in sampled],
                                                reference_texts[:k]),
                    "samples_per_input": samples_per_input, "examples": k}
    n = len(recipes)
    judged = judge.score([request_of(p) for p in prompts], [s.recipe for s in samples]) if judge is not None else None
    lm = {} if judged is None else {
        "lm_judge_pass_rate": sum(ok for _, ok in judged) / max(n, 1),
        "cookable_lm_rate": sum(ok and s.cookable.cookable for (_, ok), s in zip(judged, samples, strict=True))
        / max(n, 1)}
    return {
        "examples": n, "decoding": decoding, "max_new_tokens": max_new_tokens,
        f"{split}_loss": loss, f"{split}_perplexity": math.exp(min(loss, 50.0)),
        "max_source_tokens": max_source_tokens, "max_target_tokens": max_target_tokens,
        **sample_metrics(samples), **lm,
        "ingredient_coverage": (sum(ingredient_coverage(w, r) for w, r in with_names) / len(with_names)
                                if with_names else None),
        "rougeL": sum(rouge(h, r, ("rougeL",))["rougeL"]
                      for h, r in zip(hypothesis_texts, reference_texts, strict=True)) / max(n, 1),
        "bleu": corpus_bleu(hypothesis_texts, reference_texts),
        "chef_transformer": protocol,
        "best_of": best_of, "grounded": grounded,
        "samples": [{"prompt": s.prompt, "text": s.text, "usable": s.checks.usable, "stopped": s.checks.stopped,
                     "cookable": s.cookable.cookable, "failed": s.cookable.failed,
                     **({} if judged is None else {"lm_judge": round(judged[i][0], 4)})}
                    for i, s in enumerate(samples[:keep_samples])],
    }


def evaluate_run(path: str | Path, data: str | Path, split: str = "test", max_examples: int = 50,
                 samples_per_input: int = 3, decoding: str = EvalConfig.decoding,
                 max_new_tokens: int = EvalConfig.max_new_tokens,
                 templates: list[str] | None = None, seed: int = 0, max_source_tokens: int = 512,
                 max_target_tokens: int = 512, best_of: int = 1, grounded: float = 0.0,
                 engine: str = EvalConfig.engine, judge_model: str | Path | None = None, retrieval=None) -> dict:
    """All evaluation numbers for a run, adapter or model on a fixed random subset of a prepared
    split: loss and perplexity (at the given token limits: pass the run's), the recipe metrics,
    usability (usable rate, repetition, ingredients used, stopped), requested names covered,
    ROUGE-L and BLEU (0-1) against the references, and the Chef Transformer protocol;
    ``judge_model``: the LM judge's model (`chef_genius.lm_judge`), loaded before anything runs."""
    templates = templates or SEED_TEMPLATES
    judge = None
    if judge_model is not None:
        from chef_genius.lm_judge import JudgeReader

        judge = JudgeReader.load(judge_model)  # a wrong model is refused before the run is loaded
    loaded = load_run(path)
    table = load_split(Path(data), split)
    if len(table) == 0 and split == "test":
        split, table = "val", load_split(Path(data), "val")
    recipes = [table.recipe(i) for i in held_out_rows(len(table), max_examples, seed)]
    result = evaluate_loaded(loaded.model, loaded.tokenizer, loaded.family, recipes, templates, decoding,
                             max_new_tokens, samples_per_input, seed=seed, split=split,
                             max_source_tokens=max_source_tokens, max_target_tokens=max_target_tokens,
                             best_of=best_of, grounded=grounded, engine=engine, judge=judge,
                             retrieval=retrieval)
    return {"run": str(path), "data": str(data), "split": split, **result}


def format_evaluation(result: dict) -> str:
    settings = ("examples", "max_new_tokens", "max_source_tokens", "max_target_tokens")
    rows = [(k, v) for k, v in result.items() if isinstance(v, (int, float)) and k not in settings]
    rows += [(f"chef_transformer/{k}", v) for k, v in (result["chef_transformer"] or {}).items()]
    width = max(len(k) for k, _ in rows)
    lines = [f"{result['run']} on {result['data']} ({result['split']} split, {result['examples']} recipes; "
             f"BLEU, ROUGE and the recipe scores are fractions, 0-1)"]
    lines += [f"  {k:<{width}}  {v:.4f}" if isinstance(v, float) else f"  {k:<{width}}  {v}" for k, v in rows]
    return "\n".join(lines)
