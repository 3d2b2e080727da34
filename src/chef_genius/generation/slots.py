"""A long-lived causal decoder with fixed slots, for a server: rows come and go one by one.

`CausalDecoder` decodes a list of prompts to its end. `SlotDecoder` keeps its slots, cache and
captured decode step between requests: `admit` prefills new prompts into free slots (each with
its own settings, token limit and seed, see `rowrules`), `advance` runs decode steps (replays of
one CUDA graph on a GPU), `read` brings back, in one host sync, every slot's token count, whether
it ended and its newest tokens, and `free` ends a slot whose client has gone.

The cache's capacity (columns per slot) is sized to the rows it holds: it grows, by powers of
two, when a newcomer needs more (the rows keep their columns; a graph is captured for a size not
seen before; eager steps grow it as the rows get longer) and, when every slot is free and it is
over 4x what a newcomer needs, goes back to the smallest size that fits. Attention reads the whole
capacity each step, so a small one is a fast one. With graphs, the last `KEEP_SIZES` sizes left
behind (up to `KEEP_COLUMNS` columns each) keep their state, cache and captured step, so coming
back to one costs no capture.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import nullcontext

import torch

from chef_genius.generation.attention import grouped_attention_for
from chef_genius.generation.causal import CausalDecoder
from chef_genius.generation.prefill import WARM_WIDTHS, prefill_shape
from chef_genius.generation.rowrules import RowRules
from chef_genius.generation.rules import DecodingRule
from chef_genius.generation.state import RowCache, RowState, device_tensor

SEED_RANGE = 1 << 63
KEEP_SIZES = 2  # cache sizes kept besides the current one (graphs only), the most recently left
KEEP_COLUMNS = 2048  # larger ones are freed when left: their cache and graph pool are the largest


def _bucket(columns: int) -> int:
    return max(64, 1 << (columns - 1).bit_length())


class SlotDecoder(CausalDecoder):
    """Slots that take prompts whenever they are free.

    Args:
        model, stops, pad_id, position_limit, graphs, grouped: as `CausalDecoder`.
        slots: rows decoded at once.
        max_new_tokens: the most tokens a row may ask for.
        largest_ngram: the largest n-gram ban a row may ask for (the ban's window).
        race: draw samples by the exponential race with hashed noise (what a graph replays); else
            (eager only) each request's rows draw from its generator, as `generate` draws.
        window: the most tokens a row may write between two `read`s (decode steps + 1).
        fused: decode steps through `llama_step.LlamaDecodeStep` where it supports the model, the
            GPU's graph included (as `CausalDecoder`'s; off by default).
        compiled: ``fused`` with the step's layers compiled (`CausalDecoder`'s), and on a GPU the
            graph's per-row sampling compiled too.
        prefill_graphs: newcomers prefilled in shape buckets, replayed as CUDA graphs
            (`generation.prefill`; None: where the decode step's graphs run, for a model without
            sliding-window layers; True on the CPU runs the buckets' shapes eagerly).
    """

    def __init__(self, model: torch.nn.Module, stops: list[int], pad_id: int, slots: int, max_new_tokens: int,
                 largest_ngram: int = 10, graphs: bool = True, race: bool | None = None,
                 position_limit: int | None = None, grouped: bool = True, window: int = 8, fused: bool = False,
                 compiled: bool = False, prefill_graphs: bool | None = None):
        super().__init__(model, DecodingRule(False), stops, pad_id, max_new_tokens, slots, prompt_width=0,
                         graphs=graphs, race=race, position_limit=position_limit, grouped=grouped, fused=fused,
                         compiled=compiled, prefill_graphs=bool(prefill_graphs))
        if prefill_graphs is None:
            self.prefill_graphs = self.graphs and self.sliding is None  # buckets without graphs gain nothing
        if self.graphs and not self.race:
            raise ValueError("a CUDA graph draws by the race: race=False needs graphs=False")
        self.rules = RowRules(slots, self.device, largest_ngram)
        # compiled: a graph's per-row sampling (bans, warps, the hashed race) as fused kernels too
        self._compiled_choose = torch.compile(self.rules.choose, dynamic=False) if compiled and self.graphs else None
        self.window = window
        self.sent = torch.zeros(slots, dtype=torch.long, device=self.device)  # tokens read back so far
        self._sent = [0] * slots  # the same, on the host
        self.ngrams = [0] * slots  # each slot's n-gram ban, on the host (0 once free)
        self.draws: list[tuple[torch.Generator | None, list[int]]] = []  # eager: each request's slots
        self._sizes: dict[int, tuple] = {}  # graphs: other sizes' (state, cache, captured step)
        self._resize(_bucket(1), keep=False)

    # Capacity.

    def _resize(self, capacity: int, keep: bool) -> None:
        """Give the cache ``capacity`` columns; ``keep``: carry the rows' state and cache over.

        With graphs, the size left keeps its state, cache and captured step (the last `KEEP_SIZES`
        sizes of at most `KEEP_COLUMNS` columns), so coming back to it costs no capture (a capture
        stalls every row and a newcomer's first token). What is kept costs memory besides the
        current cache: those caches and their graphs' private pools (logits over the vocabulary)."""
        old_state, old_cache = self.state, self.cache
        kept = None
        if self.graphs:
            if self._replay is not None and self.capacity <= KEEP_COLUMNS:
                self._sizes[self.capacity] = (old_state, old_cache, self._replay)
            kept = self._sizes.pop(capacity, None)
            while len(self._sizes) > KEEP_SIZES:  # dicts keep insertion order: the oldest left goes
                self._sizes.pop(next(iter(self._sizes)))
        if kept is None:
            state = RowState(self.slots, capacity, self.state.max_new_tokens, self.state.stops.tolist(), self.pad_id,
                             self.device)
            cache, replay = RowCache(self.slots, capacity, state.column), None
        else:
            state, cache, replay = kept
            state.finished.fill_(True)  # its rows moved on, or ended, when it was left
            state.count.zero_()
        if keep:
            columns = min(capacity, self.capacity)
            for name in ("generated", "count", "column", "start", "last", "finished", "limit"):
                getattr(state, name).copy_(getattr(old_state, name))
            state.history[:, :columns + 1] = old_state.history[:, :columns + 1]
            for layer, (keys, values) in enumerate(zip(old_cache.keys, old_cache.values, strict=True)):
                if layer == len(cache.keys):
                    cache.keys.append(keys.new_zeros(keys.shape[:2] + (capacity,) + keys.shape[3:]))
                    cache.values.append(values.new_zeros(values.shape[:2] + (capacity,) + values.shape[3:]))
                cache.keys[layer][:, :, :columns] = keys[:, :, :columns]
                cache.values[layer][:, :, :columns] = values[:, :, :columns]
        self.state, self.cache, self.capacity = state, cache, capacity
        self._replay = replay  # None: the graph held another size's tensors: capture again

    def _fit(self, columns: int, busy: bool) -> None:
        # Idle, it shrinks only when 4x too large: each new size costs a graph capture (and time to a first token).
        if columns > self.capacity or (not busy and 4 * _bucket(columns) < self.capacity):
            self._resize(_bucket(columns), keep=busy)

    # Rows.

    def admit(self, slots: list[int], prompts: list[list[int]], limits: list[int], settings: list[dict],
              seeds: list[int | None], generators: list[torch.Generator | None] | None = None,
              busy: bool = True) -> None:
        """Prefill ``prompts`` into free ``slots`` (one pass) and choose their first tokens.

        Args:
            limits: each row's token limit (at most ``max_new_tokens``).
            settings: each row's decoding settings (`inference.NEUTRAL` keys).
            seeds: each row's seed for the race (None: one from the global RNG).
            generators: eager draws: each row's generator (None, or no list: the global RNG); rows
                of one request share one and are drawn together, in their order.
            busy: other slots hold rows (else the cache may shrink).
        """
        limits = [max(1, min(limit, self.state.max_new_tokens)) for limit in limits]
        # A graph's shapes must hold the rows to their end; eager steps grow the cache as they go.
        width = prefill_shape([len(p) for p in prompts], self.prefill_graphs)[1]  # the prompts' columns
        self._fit(width + (max(limits) if self.graphs else self.window) + 1, busy)
        seeds = [int(torch.randint(0, 1 << 62, ())) if s is None else s % SEED_RANGE for s in seeds]
        groups: dict[tuple, tuple[list[int], list[int]]] = {}
        for slot, setting, seed in zip(slots, settings, seeds, strict=True):
            group = groups.setdefault(tuple(sorted(setting.items())), ([], []))
            group[0].append(slot)
            group[1].append(seed)
        for key, (owned, owned_seeds) in groups.items():
            self.rules.set(owned, dict(key), owned_seeds)
        if not self.race:  # eager draws: every sampled row needs a place in `draws`
            generators = generators or [None] * len(slots)
            for generator, slot, setting in zip(generators, slots, settings, strict=True):
                if not setting.get("do_sample"):
                    continue
                owned = next((o for g, o in self.draws if g is generator and g is not None), None)
                if owned is None:
                    self.draws.append((generator, [slot]))
                else:
                    owned.append(slot)
        self.sent[device_tensor(slots, self.device)] = 0
        for slot, setting in zip(slots, settings, strict=True):
            self._sent[slot], self.ngrams[slot] = 0, int(setting.get("no_repeat_ngram_size", 0))
        with grouped_attention_for(self.model) if self.grouped else nullcontext():
            self._prefill(slots, prompts, limits)

    def warm_prefills(self, widths: tuple[int, ...] = WARM_WIDTHS) -> int:
        """Capture the prefills of every row bucket up to the slots' at ``widths`` (a server before
        its first request: a first capture costs about three prefills, paid by a newcomer's first
        token otherwise); how many were captured (0 where prefills are not captured)."""
        if not self.captures_prefills:
            return 0
        shapes = [(1 << k, width) for width in widths for k in range((self.slots - 1).bit_length() + 1)
                  if prefill_shape([width] * (1 << k), True) == (1 << k, width, True)]
        with grouped_attention_for(self.model) if self.grouped else nullcontext():
            for rows, width in shapes:
                self.prefill_graph(rows, width)
        return len(shapes)

    def free(self, slots: list[int]) -> None:
        """End the rows of ``slots`` now (a client gone) and forget their draws."""
        if slots:
            self.state.finished[device_tensor(slots, self.device)] = True
        gone = set(slots)
        for slot in slots:
            self.ngrams[slot] = 0
        self.draws = [(g, o) for g, o in self.draws if not gone.intersection(o)]

    def advance(self, steps: int) -> None:
        """``steps`` decode steps for every slot (a first graph capture runs two more)."""
        if not self.graphs:
            self._fit(int(self.state.column.max()) + steps + 1, busy=True)
        with grouped_attention_for(self.model) if self.grouped else nullcontext():
            for _ in range(steps):
                self._step()

    def read(self) -> tuple[list[int], list[bool], list[list[int]]]:
        """Each slot's token count, whether it ended, and its tokens written since the last read
        (one copy to the host)."""
        state, width = self.state, self.window
        at = (self.sent[:, None] + torch.arange(width, device=self.device)[None, :]).clamp_max(
            state.generated.shape[1] - 1)
        fresh = state.generated.gather(1, at)
        packed = torch.cat([state.count[:, None], state.finished[:, None].long(), fresh], dim=1).tolist()
        new = [row[0] - sent for row, sent in zip(packed, self._sent, strict=True)]
        if max(new) > width:
            raise RuntimeError(f"a row wrote {max(new)} tokens between two reads, over the decoder's window {width}")
        self.sent.copy_(state.count)
        self._sent = [row[0] for row in packed]
        return self._sent[:], [bool(r[1]) for r in packed], [r[2:2 + k] for r, k in zip(packed, new, strict=True)]

    def _decode_step(self) -> None:
        """As `CausalDecoder`'s; eager, it runs only the rows still writing and the ended rows of a
        request that draws from its own generator (a server's idle slots cost nothing), attends
        only to the columns some row has written and bans only the n-grams some row asks for (a
        graph's shapes stay whole)."""
        if self.graphs:
            super()._decode_step()
            return
        state = self.state
        running = ~state.finished
        owned = [slot for _, slots in self.draws for slot in slots]
        if owned:  # a request's generator draws for all its rows, ended or not, as `generate` does
            running[torch.tensor(owned, device=self.device)] = True
        live = running.nonzero().squeeze(1)
        if live.numel() == 0:
            return
        rows = None if live.numel() == self.slots else live
        pick: Callable = (lambda t: t) if rows is None else (lambda t: t[rows])
        start, column = pick(state.start), pick(state.column)
        used = int(column.max())
        columns = torch.arange(used, device=self.device)
        allowed = (columns[None, :] >= start[:, None]) & (columns[None, :] < column[:, None])
        self.cache.visible, self.cache.decode_rows = used, rows
        try:
            logits = self._forward(pick(state.last)[:, None],
                                   self._mask(allowed[:, None, None, :], (column - 1)[:, None, None], columns),
                                   (column - 1 - start)[:, None])
        finally:
            self.cache.visible, self.cache.decode_rows = None, None
        state.commit(self._choose(logits, rows, used + 1), rows)

    def _choose(self, logits: torch.Tensor, rows: torch.Tensor | None, width: int | None = None) -> torch.Tensor:
        state = self.state
        history = state.history if width is None else state.history[:, :width]
        pick: Callable = (lambda t: t) if rows is None else (lambda t: t[rows])
        draw, largest = None, None
        if not self.race:
            draw = lambda probs: self._draw(probs, rows)  # noqa: E731
            largest = max(self.ngrams)
        if self._compiled_choose is not None and rows is None and draw is None:
            with torch.compiler.set_stance("default"):  # a server decodes under "force_eager"
                return self._compiled_choose(logits, history, state.column, state.count, None)
        return self.rules.choose(logits, pick(history), pick(state.column), pick(state.count), rows, draw, largest)

    def _draw(self, probs: torch.Tensor, rows: torch.Tensor | None) -> torch.Tensor:
        """Eager draws: each request's rows (among ``rows``) from its generator, together."""
        slots = list(range(self.slots)) if rows is None else rows.tolist()
        where = {slot: i for i, slot in enumerate(slots)}
        out = torch.zeros(len(slots), dtype=torch.long, device=probs.device)
        for generator, owned in self.draws:
            local = [where[s] for s in owned if s in where]
            if local:
                index = torch.tensor(local, device=probs.device)
                out[index] = torch.multinomial(probs[index], 1, generator=generator).squeeze(1)
        return out
