"""Grounded decoding: while a model writes the steps, foods its own ingredient list lacks are
pushed down, so the method cooks what the recipe lists.

A blind cook's reading rejects recipes whose steps use foods that are not listed; the cookable
verdict's ``unlisted_foods`` check counts them. `GroundedFoods` is a Transformers logits
processor: for each sequence it waits for the steps section (``Steps:``), reads the ingredient
lines written so far, and from then on subtracts ``penalty`` from the logits of every food word
(one token, with or without a leading space or capital) that real recipes always list when they
use it (`chef_genius.foods`), unless the ingredient lines, the title or the request name it.
``penalty=inf`` masks them. The work is a few token decodes per sequence and step, on the host.
"""

from __future__ import annotations

import re

import torch

from chef_genius.foods import FoodTable, food_table
from chef_genius.usability import _stem

_MARK = re.compile(r"Steps\s*:", re.IGNORECASE)
_WORD = re.compile(r"[a-zé]+(?:-[a-zé]+)*")
COLOURS = frozenset("red white black green yellow brown golden".split())


_TOKENS: dict[int, tuple[object, dict[str, list[int]]]] = {}  # id(tokenizer) -> (tokenizer, its food tokens)


def food_token_ids(tokenizer, table: FoodTable, is_strict) -> dict[str, list[int]]:
    """Stemmed food word -> ids of the single tokens that spell it ("chicken", " chicken",
    " Chicken", " chickens"...); words that take several tokens are left out. Read once per
    tokenizer (a scan of its vocabulary)."""
    cached = _TOKENS.get(id(tokenizer))
    if cached is not None and cached[0] is tokenizer:
        return cached[1]
    found: dict[str, list[int]] = {}
    vocab = tokenizer.get_vocab()
    for token, token_id in vocab.items():
        text = tokenizer.convert_tokens_to_string([token])
        word = text.strip()
        if not word.isalpha() or len(word) < 3 or text != text.rstrip():
            continue
        stem = _stem(word.lower())
        # Foods a recipe lists by name (keys of the amounts table), not colours or short fragments.
        if len(stem) >= 4 and stem not in COLOURS and stem in table.amounts and is_strict(stem, table):
            found.setdefault(stem, []).append(token_id)
    _TOKENS[id(tokenizer)] = (tokenizer, found)
    return found


class GroundedFoods:
    """Logits processor (Transformers calls it with ``(input_ids, scores)``): see the module docstring.

    Args:
        tokenizer: the model's tokenizer.
        prompt_width: tokens of the (left-padded) prompt in ``input_ids``; 0 for an encoder-decoder,
            whose ``input_ids`` are the decoder's.
        requests: the request text of each sequence (its foods are allowed), in batch order.
        penalty: subtracted from the logits of unlisted foods (``float("inf")`` masks them).
    """

    def __init__(self, tokenizer, prompt_width: int, requests: list[str], penalty: float = 5.0,
                 table: FoodTable | None = None):
        from chef_genius.findings import is_strict_food

        self.tokenizer = tokenizer
        self.width = prompt_width
        self.requests = requests
        self.penalty = penalty
        self.table = table or food_table()
        self.tokens = food_token_ids(tokenizer, self.table, is_strict_food)
        self.banned: dict[int, torch.Tensor] = {}  # sequence -> token ids pushed down
        self.waiting: set[int] | None = None  # sequences still before their steps section

    def _listed(self, text: str, request: str) -> set[str]:
        head = _MARK.split(text, maxsplit=1)[0]
        return {_stem(w) for w in _WORD.findall((head + " " + request).lower())}

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        rows = input_ids.shape[0]
        if self.waiting is None:
            self.waiting = set(range(rows))
        per_request = max(1, rows // max(len(self.requests), 1))  # num_return_sequences copies each
        for row in list(self.waiting):
            tail = self.tokenizer.decode(input_ids[row, -4:], skip_special_tokens=True)
            if "Steps" not in tail and ":" not in tail:
                continue
            text = self.tokenizer.decode(input_ids[row, self.width:], skip_special_tokens=True)
            if not _MARK.search(text):
                continue
            self.waiting.discard(row)
            listed = self._listed(text, self.requests[min(row // per_request, len(self.requests) - 1)])
            # "corn" stays open where "cornstarch" is listed: the token may begin the listed word.
            ids = [i for word, found in self.tokens.items()
                   if word not in listed and not any(w.startswith(word) for w in listed) for i in found]
            if ids:
                self.banned[row] = torch.tensor(ids, device=scores.device)
        for row, ids in self.banned.items():
            scores[row, ids] -= self.penalty
        return scores
