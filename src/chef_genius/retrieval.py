"""Reference recipes: the training recipe nearest to a request, written into its prompt.

The blind readings (docs/quality.md) reject most model recipes because the dish is not the one
asked for, or its amounts and steps do not hold together. With ``data.reference`` on, every prompt
(training, validation, `evaluate`, `generate`) carries the training recipe nearest to its request,
after the request (`augment.with_reference`): the model learns to adapt a real recipe to the
request instead of inventing one from nothing.

Nearest: cosine of TF-IDF vectors over the words of the title and the food names (a title word
weighs twice a food name's, smoothed IDF), computed as one sparse product per batch of queries. A training recipe's
own reference is never itself nor a recipe with the same title (the model would learn to copy its
target, and a request at generation time has no such twin to copy). A request for which nothing
shares a word gets no reference.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Sequence

import numpy as np
import torch

from chef_genius.dataset.table import CHUNK_ROWS, RecipeTable
from chef_genius.recipe import ITEM_SEP, Recipe, serialize

REFERENCE_CHARS = 900  # a reference is cut at its last item that fits (~225 tokens of SmolLM2's tokenizer)
_WORD = re.compile(r"[a-z]+")
_STOP = frozenset("""a an and or the of with in on for to from by at my our your best easy quick simple homemade
    recipe recipes style fresh new old minute minutes hour hours ingredient ingredients day ever super perfect
    classic mom grandma favorite famous""".split())
TITLE_WEIGHT = 2.0  # a title word counts twice a food name: the dish is what the title says
_CANDIDATES = 8  # nearest rows looked at per query before the exclusions


def _words(text: str) -> list[str]:
    return [w for w in _WORD.findall(text.lower()) if len(w) > 2 and w not in _STOP]


def query_words(title: str, foods: Sequence[str] = ()) -> dict[str, float]:
    """The distinct words a request or recipe is matched on, each with its term weight: a title
    word `TITLE_WEIGHT`, a food name's word 1."""
    weights = dict.fromkeys(_words(" ".join(foods)), 1.0)
    weights.update(dict.fromkeys(_words(title), TITLE_WEIGHT))
    return weights


def same_title_key(title: str) -> str:
    return " ".join(_WORD.findall(title.lower()))


def reference_text(recipe: Recipe, max_chars: int = REFERENCE_CHARS) -> str:
    """The recipe's training serialization, cut after its last item that fits in ``max_chars``."""
    text = serialize(recipe)
    if len(text) <= max_chars:
        return text
    cut = text.rfind(ITEM_SEP, 0, max_chars)
    return text[:cut] if cut > 0 else text[:max_chars]


class RecipeIndex:
    """TF-IDF rows of a table's recipes (title and food words), searched by sparse products."""

    def __init__(self, titles: Sequence[str], foods: Sequence[Sequence[str]]):
        self.vocabulary: dict[str, int] = {}
        rows, cols, weights = [], [], []
        for i, (title, names) in enumerate(zip(titles, foods, strict=True)):
            for word, weight in query_words(title, names).items():
                rows.append(i)
                cols.append(self.vocabulary.setdefault(word, len(self.vocabulary)))
                weights.append(weight)
        self.size = len(titles)
        self.title_keys = [same_title_key(t) for t in titles]
        rows_t, cols_t = torch.tensor(rows, dtype=torch.int64), torch.tensor(cols, dtype=torch.int64)
        frequency = torch.bincount(cols_t, minlength=len(self.vocabulary)).to(torch.float32)
        self.idf = torch.log((1.0 + self.size) / (1.0 + frequency)) + 1.0
        values = self.idf[cols_t] * torch.tensor(weights, dtype=torch.float32)
        norms = torch.zeros(self.size).index_add_(0, rows_t, values * values).sqrt().clamp_min(1e-12)
        with warnings.catch_warnings():  # "sparse CSR support is in beta": the product used here is plain
            warnings.simplefilter("ignore", UserWarning)
            self.matrix = torch.sparse_coo_tensor(torch.stack([rows_t, cols_t]), values / norms[rows_t],
                                                  (self.size, max(len(self.vocabulary), 1))).coalesce().to_sparse_csr()

    @classmethod
    def of_table(cls, table: RecipeTable) -> RecipeIndex:
        titles, foods = [], []
        for start in range(0, len(table), CHUNK_ROWS):
            rows = np.arange(start, min(start + CHUNK_ROWS, len(table)), dtype=np.int64)
            titles += table.take(rows, "title")
            foods += table.food_names(rows)
        return cls(titles, foods)

    def _queries(self, titles: Sequence[str], foods: Sequence[Sequence[str]]) -> torch.Tensor:
        dense = torch.zeros(len(titles), max(len(self.vocabulary), 1))
        for j, (title, names) in enumerate(zip(titles, foods, strict=True)):
            for word, weight in query_words(title, names).items():
                if word in self.vocabulary:
                    dense[j, self.vocabulary[word]] = weight * self.idf[self.vocabulary[word]]
        return torch.nn.functional.normalize(dense, dim=1)

    def nearest(self, titles: Sequence[str], foods: Sequence[Sequence[str]], own_rows: Sequence[int] | None = None,
                batch: int = 512) -> np.ndarray:
        """The nearest row to each query, or -1 where none shares a word. ``own_rows`` (training:
        each query is that row of this index) excludes the row itself and rows of the same title."""
        found = np.full(len(titles), -1, dtype=np.int64)
        for start in range(0, len(titles), batch):
            stop = min(start + batch, len(titles))
            scores = torch.sparse.mm(self.matrix, self._queries(titles[start:stop], foods[start:stop]).T)
            top_scores, top_rows = scores.topk(min(_CANDIDATES, self.size), dim=0)
            for j in range(stop - start):
                query = start + j
                exclude = None if own_rows is None else own_rows[query]
                key = None if exclude is None else self.title_keys[exclude]
                for score, row in zip(top_scores[:, j].tolist(), top_rows[:, j].tolist(), strict=True):
                    if score <= 0:
                        break
                    if row != exclude and (key is None or self.title_keys[row] != key):
                        found[query] = row
                        break
        return found


class References:
    """The reference recipes of a run: its training split, indexed once."""

    def __init__(self, table: RecipeTable):
        self.table = table
        self.index = RecipeIndex.of_table(table)
        self._own: np.ndarray | None = None

    def texts(self, rows: np.ndarray) -> list[str | None]:
        """`reference_text` of the table's ``rows`` (None where a row is -1)."""
        rows = np.asarray(rows, dtype=np.int64)
        texts: list[str | None] = [None] * len(rows)
        present = np.flatnonzero(rows >= 0)
        for at, recipe in zip(present.tolist(), self.table.rows(rows[present]), strict=True):
            texts[at] = reference_text(recipe)
        return texts

    def for_requests(self, titles: Sequence[str], foods: Sequence[Sequence[str]]) -> list[str | None]:
        """References for requests from elsewhere (validation, test, a user's prompt)."""
        return self.texts(self.index.nearest(titles, foods))

    def for_training_rows(self, rows: np.ndarray) -> list[str | None]:
        """References for the training split's own ``rows``: the nearest other recipe, computed
        for the whole split on first use."""
        if self._own is None:
            self._own = self._nearest_own(np.arange(len(self.table), dtype=np.int64))
        return self.texts(self._own[np.asarray(rows, dtype=np.int64)])

    def _nearest_own(self, rows: np.ndarray) -> np.ndarray:
        found = np.empty(len(rows), dtype=np.int64)
        for start in range(0, len(rows), CHUNK_ROWS):
            chunk = rows[start:start + CHUNK_ROWS]
            found[start:start + len(chunk)] = self.index.nearest(self.table.take(chunk, "title"),
                                                                 self.table.food_names(chunk), own_rows=chunk)
        return found
