"""The engine's decoding rules on hand-made scores: the n-gram ban on hand-computed rows, the race
among the top k that draws from the full warp's distribution, and the top-k warp that keeps what
`warp` keeps."""

from __future__ import annotations

import pytest
import torch

from chef_genius.generation.rules import ban_repeated_ngrams


def test_ngram_ban_on_hand_computed_rows():
    history = torch.tensor([[5, 6, 7, 5, 6, 0, 0], [1, 2, 3, 4, 1, 2, 3]])
    length = torch.tensor([5, 7])
    banned = ban_repeated_ngrams(torch.zeros(2, 10), history, length, 3)
    assert torch.isinf(banned[0]).nonzero().flatten().tolist() == [7]  # 5 6 -> 7 was seen
    assert torch.isinf(banned[1]).nonzero().flatten().tolist() == [4]  # 2 3 -> 4 was seen
    assert not torch.isinf(ban_repeated_ngrams(torch.zeros(2, 10), history, torch.tensor([2, 3]), 3)).any()


@pytest.mark.parametrize("top_p", [0.9, 1.0])
def test_race_among_top_k_draws_from_the_full_warps_distribution(top_p):
    """The graph sampler's top-k shortcut (top-p over the k best only) keeps exactly the tokens
    `warp` keeps, and its draws follow `warp`'s probabilities: 40,000 draws of 8 rows, every
    token's frequency within 4 standard errors; a changed temperature is rejected by the same test."""
    from chef_genius.generation.rules import DecodingRule, race_among_top_k, warp

    generator = torch.Generator().manual_seed(3)
    scores = torch.randn(8, 300, generator=generator) * 3
    scores[:, 7] = -float("inf")  # a banned token
    rule = DecodingRule(do_sample=True, temperature=0.8, top_k=20, top_p=top_p)
    expected = warp(scores, rule).softmax(dim=-1)
    draws = 40_000
    torch.manual_seed(0)
    many = scores.repeat(draws // 8, 1)
    counts = torch.zeros_like(expected)
    chosen = race_among_top_k(many, rule).view(-1, 8)
    for row in range(8):
        counts[row] = torch.bincount(chosen[:, row], minlength=300).float()
    observed = counts / (draws // 8)
    assert bool(((observed > 0) <= (expected > 0)).all())  # never a token the full warp removes
    stderr = (expected * (1 - expected) / (draws // 8)).sqrt()
    assert bool(((observed - expected).abs() <= 4 * stderr + 1e-9).all())
    hotter = race_among_top_k(many, DecodingRule(do_sample=True, temperature=2.0, top_k=20, top_p=top_p)).view(-1, 8)
    hot = torch.stack([torch.bincount(hotter[:, row], minlength=300).float() for row in range(8)]) / (draws // 8)
    assert bool(((hot - expected).abs() > 4 * stderr + 1e-9).any())


@pytest.mark.parametrize("top_p", [0.9, 1.0])
def test_top_k_warp_keeps_exactly_what_warp_keeps(top_p):
    """Placed back in the vocabulary, the k best warped values are `warp`'s scores bit for bit: on
    ordinary rows, on a row with fewer finite scores than k (an n-gram ban's -inf), at a temperature;
    on a row whose k-th score ties with others, k of the tied tokens are kept where `warp` keeps
    them all (the documented difference)."""
    from chef_genius.generation.rules import DecodingRule, top_k_warp, warp

    generator = torch.Generator().manual_seed(4)
    scores = torch.randn(6, 200, generator=generator) * 2
    scores[1, 5:] = -float("inf")  # only 5 finite scores, k = 20
    rule = DecodingRule(do_sample=True, temperature=0.7, top_k=20, top_p=top_p)

    def placed(rows):
        values, indices = top_k_warp(rows, rule)
        return torch.full_like(rows, -float("inf")).scatter(1, indices, values)

    assert torch.equal(placed(scores), warp(scores, rule))
    assert int(torch.isfinite(placed(scores)[1]).sum()) <= 5
    tied = torch.zeros(1, 200)
    tied[0, :10] = torch.arange(10, 0, -1).float() * 5  # ten clear leaders, then 190 tokens tied at 0
    flat = DecodingRule(do_sample=True, top_k=20, top_p=1.0)
    ours = torch.isfinite(torch.full_like(tied, -float("inf")).scatter(1, *reversed(top_k_warp(tied, flat))))
    theirs = torch.isfinite(warp(tied, flat))
    assert int(ours.sum()) == 20 and int(theirs.sum()) == 200 and bool((ours <= theirs).all())
