"""The next token from a step's logits, as tensor operations on the model's device.

The same rules, in the same order and with the same arithmetic, as `transformers.generate`'s
sampling loop for the settings our presets use (`chef_genius.inference.DECODING` over
``NEUTRAL``): the n-gram ban (``NoRepeatNGramLogitsProcessor``), then, when sampling, temperature,
top-k and top-p (Transformers' warpers), then argmax or a draw. Nothing here reads a value back to
the host, so a decode step can be captured in a CUDA graph.

Two ways to draw a sample from the same distribution: ``torch.multinomial`` (Transformers' own
call; the eager path uses it, so a seed gives Transformers' very tokens) and the exponential race
``argmax(p / E)``, ``E ~ Exp(1)`` (Gumbel-max in another form), which a CUDA graph can replay.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class DecodingRule:
    """One preset's settings, resolved (``NEUTRAL`` then the preset)."""

    do_sample: bool
    temperature: float = 1.0
    top_k: int = 50
    top_p: float = 1.0
    no_repeat_ngram_size: int = 0

    @classmethod
    def from_settings(cls, settings: dict) -> DecodingRule:
        """The rule for Transformers' keyword settings.

        Raises:
            ValueError: a setting the engine does not implement (beams, a repetition penalty).
        """
        if settings.get("num_beams", 1) != 1:
            raise ValueError("beam search is not implemented by the engine")
        if settings.get("repetition_penalty", 1.0) != 1.0:
            raise ValueError("a repetition penalty is not implemented by the engine")
        return cls(bool(settings["do_sample"]), float(settings.get("temperature", 1.0)), int(settings.get("top_k", 50)),
                   float(settings.get("top_p", 1.0)), int(settings.get("no_repeat_ngram_size", 0)))


def ban_repeated_ngrams(scores: torch.Tensor, history: torch.Tensor, length: torch.Tensor, n: int) -> torch.Tensor:
    """``scores`` with -inf on every token that would complete an n-gram already in the row.

    Args:
        scores: (batch, vocab) float logits.
        history: (batch, width) token ids; row b's sequence so far is ``history[b, :length[b]]``.
        length: (batch,) tokens in each row's history.
        n: the n-gram size (>= 1).

    Returns:
        The banned scores (a new tensor).
    """
    batch, width = history.shape
    if width < n:
        return scores
    windows = history.unfold(1, n, 1)  # (batch, width - n + 1, n): window j is history[:, j:j + n]
    tail_at = (length[:, None] - (n - 1) + torch.arange(n - 1, device=history.device)).clamp_min(0)
    tail = history.gather(1, tail_at)  # the last n - 1 tokens
    starts = torch.arange(windows.shape[1], device=history.device)
    complete = starts[None, :] <= (length[:, None] - n)  # the window lies inside the history
    matches = (windows[..., :-1] == tail[:, None, :]).all(-1) & complete
    hits = torch.zeros_like(scores, dtype=torch.int32).scatter_add_(1, windows[..., -1], matches.to(torch.int32))
    return scores.masked_fill(hits > 0, -float("inf"))


def warp(scores: torch.Tensor, rule: DecodingRule) -> torch.Tensor:
    """Temperature, top-k and top-p as Transformers' warpers compute them (sampling only)."""
    if rule.temperature != 1.0:
        scores = scores / rule.temperature
    if rule.top_k:
        kth = torch.topk(scores, min(rule.top_k, scores.shape[-1]))[0][..., -1, None]
        scores = scores.masked_fill(scores < kth, -float("inf"))
    if rule.top_p < 1.0:
        sorted_logits, sorted_indices = torch.sort(scores, descending=False)
        cumulative = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
        remove = cumulative <= (1 - rule.top_p)
        remove[..., -1:] = False  # keep at least one token
        scores = scores.masked_fill(remove.scatter(1, sorted_indices, remove), -float("inf"))
    return scores


def next_tokens(logits: torch.Tensor, history: torch.Tensor, length: torch.Tensor, rule: DecodingRule,
                race: bool) -> torch.Tensor:
    """The chosen token of each row, (batch,) long.

    Args:
        logits: (batch, vocab) the step's logits (any float dtype; computed in float32 as Transformers does).
        history: (batch, width) and ``length`` (batch,): each row's tokens so far (see `ban_repeated_ngrams`).
        rule: the preset.
        race: draw by the exponential race (graph-safe) instead of ``torch.multinomial``.
    """
    scores = logits.float()
    if rule.no_repeat_ngram_size > 0:
        scores = ban_repeated_ngrams(scores, history, length, rule.no_repeat_ngram_size)
    if not rule.do_sample:
        return scores.argmax(dim=-1)
    if race and rule.top_k:
        return race_among_top_k(scores, rule)
    probs = warp(scores, rule).softmax(dim=-1)
    if race:
        return (probs / torch.empty_like(probs).exponential_()).argmax(dim=-1)
    return torch.multinomial(probs, num_samples=1).squeeze(1)


def top_k_warp(scores: torch.Tensor, rule: DecodingRule) -> tuple[torch.Tensor, torch.Tensor]:
    """`warp` over the k best scores only (see `race_among_top_k`): their warped values (-inf
    where top-p removes one), in descending order, and their token ids."""
    if rule.temperature != 1.0:
        scores = scores / rule.temperature
    values, indices = torch.topk(scores, min(rule.top_k, scores.shape[-1]))  # descending
    if rule.top_p < 1.0:
        cumulative = values.flip(-1).softmax(dim=-1).cumsum(dim=-1)  # ascending, as `warp` sums
        remove = cumulative <= (1 - rule.top_p)
        remove[..., -1:] = False  # keep at least one token
        values = values.masked_fill(remove.flip(-1), -float("inf"))
    return values, indices


def race_among_top_k(scores: torch.Tensor, rule: DecodingRule) -> torch.Tensor:
    """A draw from `warp`'s distribution when top-k is on, computed over the k best tokens only.

    After top-k every other token is -inf, so top-p's sort, softmax and cumulative sum over the
    whole vocabulary (49,152 scores a row for SmolLM2; the costliest part of a sampled step at
    batch 256) give the same kept set as over the k values `torch.topk` returns already sorted:
    the -inf tokens add zeros before them. The race then runs over k probabilities. One
    difference: where several tokens tie with the k-th score, `warp` keeps them all and this keeps
    k of them; top-p then normalizes over k tokens instead of all the tied ones, so its cut can fall
    elsewhere too. Ties are rare in float32 logits and less rare in bfloat16 ones.
    """
    values, indices = top_k_warp(scores, rule)
    probs = values.softmax(dim=-1)
    choice = (probs / torch.empty_like(probs).exponential_()).argmax(dim=-1, keepdim=True)
    return indices.gather(-1, choice).squeeze(-1)
