"""Decoding rules that differ from row to row, as tensors on the device (the server's rows).

`rules.DecodingRule` is one preset for a whole batch; a server's rows each come with their own
request's settings. `RowRules` holds them per slot (sampling or not, temperature, top-k, top-p,
n-gram size, a seed) and applies them with the arithmetic of `rules` (Transformers' processors and
warpers, in their order): for a row whose settings are a preset's, its probabilities are the very
ones `rules.next_tokens` computes for that preset. Nothing reads a value back to the host, so the
step can be captured in a CUDA graph.

Draws: `sample_multinomial` (the eager path) draws each request's rows together from the
request's own generator, as `generate` draws its rows from a seeded RNG, so a seeded request
writes what `generate` writes with that seed. In a CUDA graph a generator cannot be chosen per
row; `race_noise` instead gives each row Exp(1) noise from a counter-based hash of (the row's
seed, its token count, the token id) for the exponential race ``argmax(p / E)``: the same
distribution as a multinomial draw, and a seeded row's text depends on nothing else (not the
other rows, not its slot), though it is not the text `generate` draws with that seed.
"""

from __future__ import annotations

import torch

from chef_genius.generation.state import device_tensor

_MASK = 0xFFFFFFFF


def mix32(x: torch.Tensor) -> torch.Tensor:
    """A 32-bit integer hash (lowbias32) of non-negative int64 values below 2**32; products wrap
    in int64 and only their low 32 bits are kept."""
    x = x ^ (x >> 16)
    x = (x * 0x7FEB352D) & _MASK
    x = x ^ (x >> 15)
    x = (x * 0x846CA68B) & _MASK
    return x ^ (x >> 16)


def race_noise(seeds: torch.Tensor, counts: torch.Tensor, vocab: int) -> torch.Tensor:
    """(rows, vocab) float32 Exp(1) noise, a function of (seed, count, token id) only."""
    key = mix32((mix32(seeds & _MASK) ^ mix32(counts & _MASK)) & _MASK)
    tokens = torch.arange(vocab, device=seeds.device, dtype=torch.long)
    bits = mix32(mix32(key[:, None] ^ tokens[None, :]) ^ (seeds[:, None] >> 32))
    uniform = ((bits >> 8).float() + 0.5) * (1.0 / (1 << 24))  # in (0, 1), 24 bits
    return -torch.log(uniform)


def ban_ngrams_per_row(scores: torch.Tensor, history: torch.Tensor, length: torch.Tensor, sizes: torch.Tensor,
                       largest: int) -> torch.Tensor:
    """`rules.ban_repeated_ngrams` with each row's own n (``sizes``, 0: no ban), in one pass.

    Window ``e`` ends at column ``e`` (the token the ban would forbid); it matches a row of size n
    when its n - 1 tokens before ``e`` are the row's last n - 1 tokens, and it lies in the
    history (``n - 1 <= e < length``). ``largest`` bounds every n (a Python int: the shapes stay fixed).
    """
    if largest <= 0:
        return scores
    batch, width = history.shape
    padded = torch.cat([history.new_full((batch, largest - 1), -1), history], dim=1)
    windows = padded.unfold(1, largest, 1)  # (batch, width, largest): window e is history[e - largest + 1 .. e]
    back = torch.arange(1, largest, device=history.device)  # k: the token k columns back
    tail = history.gather(1, (length[:, None] - back[None, :]).clamp_min(0))  # history[length - k]
    before = windows[..., :-1].flip(-1)  # [..., k - 1] is history[e - k]
    needed = back[None, :] < sizes[:, None]  # k <= n - 1
    matches = ((before == tail[:, None, :]) | ~needed[:, None, :]).all(-1)
    ends = torch.arange(width, device=history.device)
    inside = (ends[None, :] >= sizes[:, None] - 1) & (ends[None, :] < length[:, None]) & (sizes[:, None] > 0)
    hits = torch.zeros_like(scores, dtype=torch.int32).scatter_add_(1, history, (matches & inside).to(torch.int32))
    return scores.masked_fill(hits > 0, -float("inf"))


@torch.compiler.disable
def running_sum(values: torch.Tensor) -> torch.Tensor:
    """``values.cumsum(-1)``, left eager inside a compiled `RowRules.choose`: Inductor (PyTorch
    2.11) fails to generate its split scan of a vocabulary-wide row (64 x 49,152 on an H100), so
    serve --compile-step broke on every sampled request; the rest of ``choose`` stays compiled."""
    return values.cumsum(dim=-1)


class RowRules:
    """Each slot's settings as device tensors; `set` writes a request's rows in place.

    Args:
        slots: rows of the decoder.
        device: the model's device.
        largest_ngram: the largest n-gram ban a row may ask (the ban's window; 0: none).
    """

    def __init__(self, slots: int, device: torch.device, largest_ngram: int):
        self.largest = largest_ngram
        self.sample = torch.zeros(slots, dtype=torch.bool, device=device)
        self.temperature = torch.ones(slots, device=device)
        self.top_k = torch.zeros(slots, dtype=torch.long, device=device)
        self.top_p = torch.ones(slots, device=device)
        self.ngram = torch.zeros(slots, dtype=torch.long, device=device)
        self.seed = torch.zeros(slots, dtype=torch.long, device=device)

    @staticmethod
    def check(settings: dict) -> str | None:
        """Why these settings cannot decode per row (None when they can)."""
        if settings.get("num_beams", 1) != 1:
            return "beam search"
        if settings.get("repetition_penalty", 1.0) != 1.0:
            return "a repetition penalty"
        return None

    def set(self, slots: list[int], settings: dict, seeds: list[int]) -> None:
        """Slots ``slots`` decode with ``settings`` (`inference.NEUTRAL` keys); ``seeds`` per slot."""
        if self.check(settings):
            raise ValueError(f"{self.check(settings)} cannot be decoded per row")
        if settings.get("no_repeat_ngram_size", 0) > self.largest:
            raise ValueError(f"an n-gram ban of {settings['no_repeat_ngram_size']} is over this decoder's "
                             f"{self.largest}")
        index = device_tensor(slots, self.sample.device)
        sample = bool(settings.get("do_sample"))
        self.sample[index] = sample
        self.temperature[index] = float(settings.get("temperature", 1.0)) if sample else 1.0
        self.top_k[index] = int(settings.get("top_k", 0) or 0) if sample else 0
        self.top_p[index] = float(settings.get("top_p", 1.0)) if sample else 1.0
        self.ngram[index] = int(settings.get("no_repeat_ngram_size", 0))
        self.seed[index] = device_tensor(seeds, index.device)

    def scores(self, logits: torch.Tensor, history: torch.Tensor, length: torch.Tensor,
               rows: torch.Tensor | None, largest: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(banned scores, sampling probabilities) of ``rows`` (all when None), float32;
        ``largest``: the largest ban any of them asks (default: the decoder's bound)."""
        pick = (lambda t: t) if rows is None else (lambda t: t[rows])
        largest = self.largest if largest is None else largest
        scores = ban_ngrams_per_row(logits.float(), history, length, pick(self.ngram), largest)
        warped = scores / pick(self.temperature)[:, None]  # x / 1.0 is x: Transformers skips it, same values
        vocab = warped.shape[-1]
        ascending, order = torch.sort(warped, descending=False)
        top_k = pick(self.top_k)
        kth = ascending.gather(1, (vocab - top_k.clamp(1, vocab))[:, None])  # the k-th largest; k = 0: the least
        below = warped < torch.where(top_k[:, None] > 0, kth, torch.full_like(kth, -float("inf")))
        warped = warped.masked_fill(below, -float("inf"))
        # Top-p on the same order: masking values below the k-th largest keeps the ascending order.
        ascending = ascending.masked_fill(ascending < torch.where(top_k[:, None] > 0, kth, -float("inf")),
                                          -float("inf"))
        cumulative = running_sum(ascending.softmax(dim=-1))
        top_p = pick(self.top_p)
        remove = (cumulative <= (1 - top_p)[:, None]) & (top_p < 1.0)[:, None]
        remove[..., -1:] = False  # keep at least one token
        warped = warped.masked_fill(remove.scatter(1, order, remove), -float("inf"))
        return scores, warped.softmax(dim=-1)

    def choose(self, logits: torch.Tensor, history: torch.Tensor, length: torch.Tensor, counts: torch.Tensor,
               rows: torch.Tensor | None, draw=None, largest: int | None = None) -> torch.Tensor:
        """Each row's token: argmax of its banned scores, or a draw from its probabilities, by
        ``draw(probs)`` (eager, host-side generators) or else the race with `race_noise`."""
        scores, probs = self.scores(logits, history, length, rows, largest)
        sample = self.sample if rows is None else self.sample[rows]
        if draw is not None:
            drawn = draw(probs)
        else:
            seeds = self.seed if rows is None else self.seed[rows]
            drawn = (probs / race_noise(seeds, counts, probs.shape[-1])).argmax(dim=-1)
        return torch.where(sample, drawn, scores.argmax(dim=-1))
