"""One decoding step for rows with different settings, and text that streams as tokens come.

`RowSampler` applies `chef_genius.inference`'s decoding settings with Transformers' own logits
processors, in the order ``generate`` applies them (repetition penalty, no-repeat n-grams, then
for sampling temperature, top-k, top-p); rows that share settings are processed together. A
request with a seed samples from its own generator, so its text does not depend on the other
requests in its batch.

`StreamingDetokenizer` turns each row's tokens into text pieces: each step decodes a short window
of tokens (the last settled ones and the new ones) and sends what it adds, holding back a
character still cut in the middle of its bytes; the pieces of a row add up to the decoding of all
its tokens.
"""

from __future__ import annotations

import torch


def processors(settings: dict):
    """Transformers' logits processors for one decoding setting (`inference.NEUTRAL` keys)."""
    from transformers import (
        LogitsProcessorList,
        NoRepeatNGramLogitsProcessor,
        RepetitionPenaltyLogitsProcessor,
        TemperatureLogitsWarper,
        TopKLogitsWarper,
        TopPLogitsWarper,
    )

    out = LogitsProcessorList()
    if settings.get("repetition_penalty", 1.0) != 1.0:
        out.append(RepetitionPenaltyLogitsProcessor(penalty=settings["repetition_penalty"]))
    if settings.get("no_repeat_ngram_size", 0) > 0:
        out.append(NoRepeatNGramLogitsProcessor(settings["no_repeat_ngram_size"]))
    if settings.get("do_sample"):
        if settings.get("temperature", 1.0) != 1.0:
            out.append(TemperatureLogitsWarper(settings["temperature"]))
        if settings.get("top_k", 0):
            out.append(TopKLogitsWarper(top_k=settings["top_k"], min_tokens_to_keep=1))
        if settings.get("top_p", 1.0) < 1.0:
            out.append(TopPLogitsWarper(top_p=settings["top_p"], min_tokens_to_keep=1))
    return out


def batch_decoder(tokenizer):
    """``tokenizer.batch_decode(lists, skip_special_tokens=True, clean_up_tokenization_spaces=False)``,
    the same texts: a plain fast tokenizer's backend decodes the batch itself (transformers first
    walks every id of every list in Python, which cost more than the decoding, each step)."""
    backend = getattr(tokenizer, "_tokenizer", None)
    try:
        from transformers.tokenization_utils_tokenizers import TokenizersBackend
    except ImportError:
        TokenizersBackend = None  # noqa: N806  (an older Transformers: its own batch_decode)
    plain = (TokenizersBackend is not None and isinstance(tokenizer, TokenizersBackend)
             and type(tokenizer)._decode is TokenizersBackend._decode
             and type(tokenizer).batch_decode is TokenizersBackend.batch_decode and hasattr(backend, "decode_batch"))
    if plain:
        return lambda lists: backend.decode_batch(lists, skip_special_tokens=True)
    return lambda lists: tokenizer.batch_decode(lists, skip_special_tokens=True, clean_up_tokenization_spaces=False)


class RowSampler:
    """The next token of every row; ``requests[i]`` is the request that owns batch row i."""

    def __init__(self, device: torch.device):
        self.device = device
        self._processors: dict[tuple, object] = {}
        self._generators: dict[int, torch.Generator] = {}

    def _generator(self, request) -> torch.Generator | None:
        if request.seed is None:
            return None
        key = id(request)
        if key not in self._generators:
            self._generators[key] = torch.Generator(device=self.device).manual_seed(request.seed)
        return self._generators[key]

    def next_tokens(self, logits: torch.Tensor, history: torch.Tensor, requests: list) -> torch.Tensor:
        """``logits``: the last position's scores [rows, vocab]; ``history``: each row's ids so
        far (the left-padded prompt too for a causal model, as ``generate`` sees them)."""
        out = torch.empty(len(requests), dtype=torch.long, device=logits.device)
        groups: dict[tuple, list[int]] = {}
        for position, request in enumerate(requests):
            groups.setdefault(tuple(sorted(request.settings.items())), []).append(position)
        for key, positions in groups.items():
            if key not in self._processors:
                self._processors[key] = processors(dict(key))
            index = torch.tensor(positions, device=logits.device)
            scores = self._processors[key](history[index], logits[index].float())
            if not dict(key).get("do_sample"):
                out[index] = scores.argmax(-1)
                continue
            probs = torch.softmax(scores, dim=-1)
            by_generator: dict[int, list[int]] = {}
            for local, position in enumerate(positions):
                by_generator.setdefault(id(requests[position]) if requests[position].seed is not None else 0,
                                        []).append(local)
            for owner, locals_ in by_generator.items():
                generator = self._generator(requests[positions[locals_[0]]]) if owner else None
                chosen = torch.tensor(locals_, device=logits.device)
                drawn = torch.multinomial(probs[chosen], 1, generator=generator).squeeze(1)
                out[index[chosen]] = drawn
        return out


class StreamingDetokenizer:
    """Each row's tokens as text pieces (see the module docstring)."""

    def __init__(self, tokenizer, rows: int):
        self.tokenizer = tokenizer
        self._batch_decode = batch_decoder(tokenizer)
        self.tokens: list[list[int]] = []
        self.prefix: list[int] = []  # the window starts here
        self.read: list[int] = []  # tokens up to here are sent
        self.sent: list[str] = []
        self.add(rows)

    def add(self, rows: int) -> None:
        """Rows for ``rows`` more sequences (requests that join a running batch)."""
        self.tokens += [[] for _ in range(rows)]
        self.prefix += [0] * rows
        self.read += [0] * rows
        self.sent += [""] * rows

    def reset(self, row: int) -> None:
        """Row ``row`` starts a new sequence (a server's slot taken by another request)."""
        self.tokens[row], self.prefix[row], self.read[row], self.sent[row] = [], 0, 0, ""

    def push(self, row: int, token: int) -> None:
        self.tokens[row].append(token)

    def _decode(self, lists: list[list[int]]) -> list[str]:
        return self._batch_decode(lists)

    def flush(self, rows: list[int]) -> dict[int, str]:
        """New text of each of ``rows`` since its last piece ("" when nothing is settled)."""
        rows = [r for r in rows if len(self.tokens[r]) > self.read[r]]
        if not rows:
            return {}
        before = self._decode([self.tokens[r][self.prefix[r]:self.read[r]] for r in rows])
        after = self._decode([self.tokens[r][self.prefix[r]:] for r in rows])
        fresh = {}
        for row, old, new in zip(rows, before, after, strict=True):
            if len(new) > len(old) and not new.endswith("\ufffd") and new.startswith(old):
                fresh[row] = new[len(old):]
                self.sent[row] += fresh[row]
                self.prefix[row], self.read[row] = self.read[row], len(self.tokens[row])
        return fresh

    def rest(self, row: int) -> str:
        """What the whole row decodes to beyond what was sent (its last, held-back piece)."""
        full = self._decode([self.tokens[row]])[0]
        rest = full[len(self.sent[row]):] if full.startswith(self.sent[row]) else ""
        self.sent[row] += rest
        return rest
