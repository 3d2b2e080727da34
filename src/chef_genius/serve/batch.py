"""One batch being decoded, token by token, on the model's forward pass and its KV cache.

The model's family (`chef_genius.families`) pads the prompts, runs them and each step. A row
that ends (an end token, its token limit, its request cancelled or out of time) leaves the batch
and the cache at once. For a family that takes newcomers (causal) whose cache is Transformers'
plain `DynamicCache`, requests that arrive while the batch runs join it at the next step (their
prompts run once, their cache is padded to the batch's and stacked on it), so a new request waits
one step, not for the longest recipe in the batch. A seq2seq batch (T5, BART) takes no
newcomers: it runs until its rows end.
"""

from __future__ import annotations

import torch

from chef_genius.generation.state import cache_keyword
from chef_genius.serve.decoding import RowSampler, StreamingDetokenizer
from chef_genius.serve.pieces import deliver, row_pieces


def _left(tensor: torch.Tensor, width: int, dim: int, value) -> torch.Tensor:
    """``tensor`` padded on the left of ``dim`` to ``width``."""
    missing = width - tensor.shape[dim]
    if missing <= 0:
        return tensor
    shape = list(tensor.shape)
    shape[dim] = missing
    return torch.cat([tensor.new_full(shape, value), tensor], dim=dim)


class DecodeLoop:
    """Decode ``batch`` (tickets of `engine.Engine`) to the end; newcomers join through
    ``engine._newcomers(room)``. ``batch`` grows with them, so a failure reaches every ticket."""

    def __init__(self, engine, batch: list):
        self.engine, self.batch = engine, batch
        self.model, self.device, self.family = engine.model, engine.device, engine.family
        self.cache_name = cache_keyword(self.model)
        self.owners: list[tuple] = []  # row -> (ticket, index in its request)
        self.limits: list[int] = []
        self.counts: list[int] = []
        self.sampler = RowSampler(self.device)
        self.text = StreamingDetokenizer(engine.tokenizer, 0)

    def _add(self, tickets: list) -> list[list[int]]:
        """Register the rows of ``tickets``; their prompts."""
        prompts = []
        for ticket in tickets:
            ticket.start()
            request = ticket.request
            for row in range(request.rows):
                prompt = request.prompts[row // request.n]
                self.owners.append((ticket, row))
                self.limits.append(self.engine.limit(len(prompt), request.max_tokens))
                self.counts.append(0)
                prompts.append(prompt)
        self.text.add(len(prompts))
        return prompts

    def run(self) -> None:
        prompts = self._add(self.batch)
        ids, mask = self.family.pad_prompts(prompts, self.engine.pad_id)
        ids, mask = ids.to(self.device), mask.to(self.device)
        logits, self.cache, self.mask, self.context = self.family.prefill(self.model, ids, mask, self._start_id())
        self.history = self.family.start_history(ids, self._start_id())
        self.alive = list(range(len(prompts)))  # batch position -> row
        stops = self.engine.stops
        while self.alive:
            self.engine.active_rows = len(self.alive)
            tokens = self.sampler.next_tokens(logits, self.history, [self.owners[r][0].request for r in self.alive])
            self.history = torch.cat([self.history, tokens[:, None]], dim=1)
            keep, ended = [], {}
            for position, (row, token) in enumerate(zip(self.alive, tokens.tolist(), strict=True)):
                if self.owners[row][0].gone():
                    continue
                if token in stops:
                    ended[row] = "stop"
                    continue
                self.counts[row] += 1
                self.text.push(row, token)
                if self.counts[row] >= self.limits[row]:
                    ended[row] = "length"
                else:
                    keep.append(position)
            self._send([self.alive[p] for p in keep] + list(ended), ended)
            if len(keep) < len(self.alive):
                if keep:
                    self._select(torch.tensor(keep, device=self.device))
                tokens = tokens[keep] if keep else tokens[:0]
                self.alive = [self.alive[p] for p in keep]
            if self.alive:
                logits, self.mask = self.family.decode_step(self.model, tokens, self.mask, self.context,
                                                            {self.cache_name: self.cache})
            else:
                logits = None
            logits = self._join(logits)

    def _send(self, rows: list[int], ended: dict[int, str]) -> None:
        pieces, tokens = row_pieces(rows, self.owners, self.counts, self.text, ended)
        self.engine.generated_tokens += tokens
        deliver(pieces)

    def _select(self, index: torch.Tensor) -> None:
        self.cache.batch_select_indices(index)
        self.history, self.mask = self.history[index], self.mask[index]
        if self.context is not None:
            self.context = self.context[index]

    def _start_id(self) -> int:
        start = getattr(self.model.config, "decoder_start_token_id", None)
        return start if start is not None else self.engine.pad_id

    def _joinable(self) -> bool:
        try:
            from transformers.cache_utils import DynamicLayer
        except ImportError:  # an older Transformers: no layered cache to stack
            return False
        layers = getattr(self.cache, "layers", None)
        return self.family.takes_newcomers and bool(layers) and all(type(layer) is DynamicLayer for layer in layers)

    def _join(self, logits: torch.Tensor | None) -> torch.Tensor | None:
        """Requests waiting now join the batch: their logits after the batch's."""
        if not self._joinable():
            return logits
        tickets = self.engine.newcomers(self.engine.max_rows - len(self.alive))
        if not tickets:
            return logits
        self.batch.extend(tickets)
        first = len(self.owners)
        prompts = self._add(tickets)
        ids, mask = self.family.pad_prompts(prompts, self.engine.pad_id)
        ids, mask = ids.to(self.device), mask.to(self.device)
        new_logits, new_cache, new_mask, _ = self.family.prefill(self.model, ids, mask, self._start_id())
        if not self.alive:  # the batch had ended: the newcomers are the batch
            self.cache, self.mask, self.history = new_cache, new_mask, ids
        else:
            width = max(self.mask.shape[1], new_mask.shape[1])
            for layer, new in zip(self.cache.layers, new_cache.layers, strict=True):
                layer.keys = torch.cat([_left(layer.keys, width, 2, 0), _left(new.keys, width, 2, 0)])
                layer.values = torch.cat([_left(layer.values, width, 2, 0), _left(new.values, width, 2, 0)])
            self.mask = torch.cat([_left(self.mask, width, 1, 0), _left(new_mask, width, 1, 0)])
            pad = self.engine.pad_id
            self.history = torch.cat([_left(self.history, width, 1, pad), _left(ids, width, 1, pad)])
            new_logits = torch.cat([logits, new_logits])
        self.alive += list(range(first, len(self.owners)))
        return new_logits
