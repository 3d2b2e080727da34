"""Metrics against a request or a reference recipe.

- ingredient coverage: share of the requested food names that the generated recipe uses;
- ROUGE-L (rouge-score) and corpus BLEU (sacrebleu's score / 100: a fraction, 0-1, like every
  other score here and like the published Chef Transformer / RecipeNLG figures) of generated
  against reference text;
- the Chef Transformer protocol (Chef Transformer / RecipeNLG evaluations), for comparison with
  published numbers: the food names are the input, several samples are drawn per input, texts
  are lower-cased and cleaned of punctuation and stopwords, and each input keeps its best sample
  by COSIM (cosine of word-count vectors); WER (jiwer) and ROUGE-2 are reported for that sample,
  and corpus BLEU over the best samples.
"""

from __future__ import annotations

import math
import re
from collections import Counter

from chef_genius.recipe import Recipe

# A small English stopword list (the protocol's cleaning step); cooking words are kept.
STOPWORDS = frozenset("""a an and are as at be been but by for from has have if in into is it its of
on or so such that the their then there these they this to was were will with you your
""".split())
_NON_WORD = re.compile(r"[^a-z0-9½¼¾⅓⅔ ]+")


def recipe_text(recipe: Recipe) -> str:
    """Plain text of a recipe for text metrics: title, ingredients and steps."""
    return " ".join((recipe.title, *recipe.ingredients, *recipe.steps))


def clean_for_protocol(text: str) -> str:
    """Lower-case, punctuation removed, stopwords removed (the Chef Transformer cleaning)."""
    words = _NON_WORD.sub(" ", text.lower()).split()
    return " ".join(w for w in words if w not in STOPWORDS)


def cosim(a: str, b: str) -> float:
    """Cosine similarity of the word-count vectors of two texts."""
    ca, cb = Counter(a.split()), Counter(b.split())
    dot = sum(ca[w] * cb[w] for w in ca.keys() & cb.keys())
    norm = math.sqrt(sum(v * v for v in ca.values())) * math.sqrt(sum(v * v for v in cb.values()))
    return dot / norm if norm else 0.0


def ingredient_coverage(requested: list[str] | tuple[str, ...], recipe: Recipe) -> float:
    """Share of requested food names that appear (as words) in the ingredients or steps."""
    if not requested:
        return 0.0
    text = " " + _NON_WORD.sub(" ", " ".join((*recipe.ingredients, *recipe.steps)).lower()) + " "
    used = sum(1 for name in requested if f" {' '.join(_NON_WORD.sub(' ', name.lower()).split())} " in text)
    return used / len(requested)


def rouge(hypothesis: str, reference: str, types: tuple[str, ...] = ("rougeL", "rouge2")) -> dict[str, float]:
    """ROUGE-L and ROUGE-2 F-measures (those of ``types``), as rouge-score computes them (its
    tokenizer, no stemming, its F-measure). ROUGE-L's longest common subsequence comes from
    rapidfuzz (C++) instead of rouge-score's table in Python, the same length: for 500 pairs of
    350-word texts, 0.18 s instead of 11 s on 2 cores (benchmarks/rouge_speed.py)."""
    from rouge_score import rouge_scorer, scoring, tokenizers

    scores = {}
    if "rougeL" in types:
        from rapidfuzz.distance import LCSseq

        tokenizer = tokenizers.DefaultTokenizer(use_stemmer=False)
        target, prediction = tokenizer.tokenize(reference), tokenizer.tokenize(hypothesis)
        common = LCSseq.similarity(target, prediction) if target and prediction else 0
        scores["rougeL"] = scoring.fmeasure(common / len(prediction), common / len(target)) if common else 0.0
    if "rouge2" in types:
        scores["rouge2"] = rouge_scorer.RougeScorer(["rouge2"]).score(reference, hypothesis)["rouge2"].fmeasure
    return scores


def corpus_bleu(hypotheses: list[str], references: list[str]) -> float:
    """Corpus BLEU as a fraction (0-1): sacrebleu's 0-100 score / 100."""
    import sacrebleu

    if not hypotheses:
        return 0.0
    return float(sacrebleu.corpus_bleu(hypotheses, [references]).score) / 100.0


def word_error_rate(hypothesis: str, reference: str) -> float:
    import jiwer

    if not reference.strip():
        return 1.0 if hypothesis.strip() else 0.0
    return float(jiwer.wer(reference, hypothesis or " "))


def chef_transformer_protocol(samples: list[list[str]], references: list[str]) -> dict[str, float]:
    """Best-of-N COSIM, and WER / ROUGE-2 of the best sample, and corpus BLEU over the best samples.

    Args:
        samples: for each input, the N generated recipe texts.
        references: for each input, the reference recipe text.
    """
    best, cosims, wers, rouge2 = [], [], [], []
    for candidates, reference in zip(samples, references, strict=True):
        ref = clean_for_protocol(reference)
        cleaned = [clean_for_protocol(c) for c in candidates] or [""]
        scores = [cosim(c, ref) for c in cleaned]
        top = cleaned[scores.index(max(scores))]
        best.append(top)
        cosims.append(max(scores))
        wers.append(word_error_rate(top, ref))
        rouge2.append(rouge(top, ref, ("rouge2",))["rouge2"])
    n = max(len(references), 1)
    return {"cosim": sum(cosims) / n, "wer": sum(wers) / n, "rouge2": sum(rouge2) / n,
            "bleu": corpus_bleu(best, [clean_for_protocol(r) for r in references])}
