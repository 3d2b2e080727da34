"""Decoding a causal model (Llama family: SmolLM2) with continuous batching.

A fixed number of slots share one KV cache (`RowCache`) allocated once. Prompts are prefilled in
one forward pass per group (left-padded, the last token's logits only); then each decode step feeds
every slot its last token, computes the next with `rules.next_tokens` and appends it on the
device. Every ``check_every`` steps the host reads which rows ended: their tokens are collected
and, when ``continuous``, waiting prompts are prefilled into the freed slots while the other rows
keep their cache, so one long recipe does not hold the batch. On CUDA the decode step is captured
once as a CUDA graph and replayed (the shapes and addresses never change; refills write in place).
"""

from __future__ import annotations

import sys
from collections import deque
from collections.abc import Callable

import torch

from chef_genius.generation.attention import grouped_attention_for
from chef_genius.generation.layout import column_major_linears
from chef_genius.generation.llama_step import LlamaDecodeStep
from chef_genius.generation.prefill import MAX_GRAPH_TOKENS, MAX_GRAPH_WIDTH, PrefillBuffer, PrefillGraph, prefill_shape
from chef_genius.generation.rules import DecodingRule, next_tokens
from chef_genius.generation.state import RowCache, RowState, additive_mask, base_model, cache_keyword, device_tensor

CPU_FAST_MIN_TOKENS = 16  # below this token limit the CPU path's weight copies are not worth making


def model_dtype(model: torch.nn.Module) -> torch.dtype:
    return next(p for p in model.parameters() if p.is_floating_point()).dtype


def sliding_window(model: torch.nn.Module) -> int | None:
    """The window of a model whose layers are partly sliding-window ones (Gemma 3: a query sees
    the keys less than ``window`` positions before it), else None."""
    base = base_model(model)
    config = base.config
    window = getattr(config, "sliding_window", None)
    return window if window and "sliding_attention" in (getattr(config, "layer_types", None) or ()) else None


class CausalDecoder:
    """Decode prompts on ``slots`` rows of one cache.

    Args:
        model: a causal LM whose forward takes ``cache``, a 4D additive mask and position ids.
        rule: the preset (`DecodingRule`).
        stops: token ids that end a row.
        pad_id: left padding, and what a finished row emits.
        max_new_tokens: the token limit of a row.
        slots: rows decoded at once.
        prompt_width: the longest prompt (sets the cache's capacity).
        continuous: refill finished rows from the queue at once (else batch after batch).
        check_every: decode steps between reads of the finished rows (1: Transformers' own
            timing, so a seed gives its very samples; more: fewer host syncs).
        graphs: capture the decode step as a CUDA graph (CUDA only).
        position_limit: the longest sequence the model's positions allow: a row stops there, its
            prompt included (None: unbounded).
        race: sample by the exponential race (None: when graphs run; see `rules`).
        grouped: decode steps attend through `attention.grouped_attention` (else the model's own).
        cpu_fast: on the CPU, decode steps attend to the written columns only, and run through
            `llama_step.LlamaDecodeStep` where it supports the model (with ``grouped``), else the
            model's forward on column-major wide weights (`layout.column_major_linears`); both only
            from ``CPU_FAST_MIN_TOKENS`` tokens a row (their copies take about 0.4 s for SmolLM2-135M).
        fused: decode steps through `llama_step.LlamaDecodeStep` (fused q/k/v and gate/up products)
            wherever it supports the model, the GPU's graph included (``grouped`` needed); on the CPU
            without ``cpu_fast`` it attends over the whole cache, as a graph does.
        compiled: ``fused``, with each layer of a step over the whole cache compiled
            (``torch.compile``; `LlamaDecodeStep`'s ``compiled``).
        prefill_graphs: prefills in shape buckets (`prefill.prefill_shape`), replayed as CUDA graphs
            where ``graphs`` run and the model has no sliding-window layers (a server's newcomers:
            `SlotDecoder`; elsewhere the buckets' shapes run eagerly).
    """

    def __init__(self, model: torch.nn.Module, rule: DecodingRule, stops: list[int], pad_id: int,
                 max_new_tokens: int, slots: int, prompt_width: int, continuous: bool = True, check_every: int = 1,
                 graphs: bool = False, race: bool | None = None, position_limit: int | None = None,
                 grouped: bool = True, cpu_fast: bool = True, fused: bool = False,
                 compiled: bool = False, prefill_graphs: bool = False):
        self.model, self.rule, self.pad_id = model, rule, pad_id
        self.device = next(model.parameters()).device
        self.dtype = model_dtype(model)
        self.slots, self.continuous, self.check_every = slots, continuous, max(1, check_every)
        self.graphs = graphs and self.device.type == "cuda"
        self.race = self.graphs if race is None else race
        self.position_limit, self.grouped = position_limit, grouped
        # a bucketed prefill (prefill_graphs) may be wider than its longest prompt
        self.capacity = prefill_shape([prompt_width], prefill_graphs)[1] + max_new_tokens + 1
        self.state = RowState(slots, self.capacity, max_new_tokens, stops, pad_id, self.device)
        self.cache = RowCache(slots, self.capacity, self.state.column)
        self._replay: Callable[[], None] | None = None
        self._cache_keyword = cache_keyword(model)
        self.sliding = sliding_window(model)
        self.cpu_fast = cpu_fast and self.device.type == "cpu"
        # The weights' copies (lean step) or layout changes cost about as much as a dozen steps gain.
        worth = self.cpu_fast and max_new_tokens >= CPU_FAST_MIN_TOKENS
        self._parts = 2 if self.cpu_fast else 1
        self._compiled = compiled
        lean = worth or fused or compiled
        self._wants_lean = lean and grouped and LlamaDecodeStep.supports(model, self.device.type)
        self._relayout = worth and not self._wants_lean
        self._lean: LlamaDecodeStep | None = None  # made at the first decode step
        self.prefill_graphs, self._prefill_pool, self._prefill_buffer = prefill_graphs, None, None
        self._prefills: dict[tuple[int, int], PrefillGraph] = {}  # (rows, width) -> its captured prefill

    def run(self, prompts: list[list[int]],
            on_done: Callable[[int], None] | None = None) -> list[tuple[list[int], bool]]:
        """(generated ids, ended at a stop token) for each prompt, in order; ``on_done(i)`` as
        prompt i's row is collected."""
        with column_major_linears(self.model, enabled=self._relayout):
            if not self.grouped:
                return self._run(prompts, on_done)
            with grouped_attention_for(self.model):
                return self._run(prompts, on_done)

    def _run(self, prompts: list[list[int]],
             on_done: Callable[[int], None] | None) -> list[tuple[list[int], bool]]:
        results: list[tuple[list[int], bool] | None] = [None] * len(prompts)
        waiting = deque(range(len(prompts)))
        owner: dict[int, int] = {}  # slot -> prompt index
        steps = 0
        while waiting or owner:
            free = [s for s in range(self.slots) if s not in owner]
            if waiting and free and (self.continuous or not owner):
                taken = [waiting.popleft() for _ in range(min(len(free), len(waiting)))]
                with torch.profiler.record_function("engine.prefill"):
                    self._prefill(free[:len(taken)], [prompts[i] for i in taken])
                owner.update(zip(free[:len(taken)], taken, strict=True))
            elif owner:
                with torch.profiler.record_function("engine.step"):
                    self._step()
                steps += 1
                if steps % self.check_every:
                    continue
            with torch.profiler.record_function("engine.check"):
                done = self.state.finished.tolist()
            for slot in [s for s in owner if done[s]]:
                index = owner.pop(slot)
                results[index] = self.state.result(slot)
                if on_done is not None:
                    on_done(index)
        return results  # type: ignore[return-value]

    def _forward(self, ids: torch.Tensor, mask: torch.Tensor, positions: torch.Tensor, cache=None) -> torch.Tensor:
        """The last token's logits; ``cache``: another than the decoder's (a captured prefill's)."""
        if self._wants_lean and ids.shape[1] == 1 and cache is None and self.cache.prefill_rows is None:
            if self._lean is None:
                self._lean = LlamaDecodeStep(self.model, self._parts, self._compiled)
            return self._lean(ids, mask, positions, self.cache)
        out = self.model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True, logits_to_keep=1,
                         **{self._cache_keyword: self.cache if cache is None else cache})
        return out.logits[:, -1]

    def _prefill(self, slots: list[int], prompts: list[list[int]], token_limits: list[int] | None = None) -> None:
        """Run ``prompts`` into ``slots`` in one pass and choose their first tokens; ``token_limits``:
        each row's own token limit (default ``max_new_tokens``; the model's positions bound both).
        With ``prefill_graphs`` the pass has its bucket's shape (`prefill.prefill_shape`) and, on a
        GPU, replays that shape's captured graph, whose keys and values are then copied in."""
        count = len(prompts)
        rows_run, width, graphed = prefill_shape([len(p) for p in prompts], self.prefill_graphs)
        limits = token_limits or [self.state.max_new_tokens] * count
        # One copy to the device, queued behind the steps in flight: each row's ids, slot, start, length, limit.
        lines = [[self.pad_id] * (width - len(p)) + list(p) + [slot, width - len(p), len(p), limit]
                 for p, slot, limit in zip(prompts, slots, limits, strict=True)]
        packed = device_tensor(lines + lines[-1:] * (rows_run - count), self.device)
        real = packed[:count]
        ids, rows, starts, lengths, limits = real[:, :width], *real[:, width:].unbind(1)
        graph = self._graph_for(rows_run, width) if graphed else None
        if graph is not None:  # the bucket's rows: its extra ones repeat the last row, dropped after the replay
            logits, keys, values = graph(packed[:, :width], packed[:, width + 1])
            logits = logits[:count]
            self.cache.write(rows, [k[:count] for k in keys], [v[:count] for v in values])
        else:  # the real rows at the bucket's width (the cache was sized for it)
            self.cache.prefill_rows = rows
            try:
                logits = self._prefill_pass(ids, starts)
            finally:
                self.cache.prefill_rows = None
        if self.position_limit is not None:
            limits = torch.minimum(limits, (self.position_limit - lengths).clamp_min(1))
        self.state.begin(rows, ids, starts, limits)
        self.state.commit(self._choose(logits, rows), rows)

    def _prefill_pass(self, ids: torch.Tensor, starts: torch.Tensor, cache=None) -> torch.Tensor:
        """The last tokens' logits of left-padded ``ids`` whose real tokens begin at ``starts``."""
        width = ids.shape[1]
        columns = torch.arange(width, device=ids.device)
        real = columns[None, :] >= starts[:, None]
        # Transformers' position ids for a left-padded batch: cumsum(mask) - 1, padding at 1.
        positions = (columns[None, :] - starts[:, None]).masked_fill(~real, 1)
        allowed = real[:, None, None, :] & (columns[None, None, None, :] <= columns[None, None, :, None])
        return self._forward(ids, self._mask(allowed, columns[None, None, :], columns), positions, cache)

    def prefill_graph(self, rows: int, width: int) -> PrefillGraph:
        """The captured prefill of ``rows`` x ``width`` (captured at its first use)."""
        graph = self._prefills.get((rows, width))
        if graph is None:
            if rows * width > MAX_GRAPH_TOKENS or width > MAX_GRAPH_WIDTH:
                raise ValueError(f"a {rows} x {width} prefill is over the captured prefills' limits "
                                 f"({MAX_GRAPH_TOKENS} tokens, {MAX_GRAPH_WIDTH} wide)")
            if self._prefill_buffer is None:
                self._prefill_pool, self._prefill_buffer = torch.cuda.graph_pool_handle(), PrefillBuffer()
            graph = PrefillGraph(self._prefill_pass, rows, width, self.device, self._prefill_pool,
                                 self._prefill_buffer)
            self._prefills[(rows, width)] = graph
        return graph

    @property
    def captures_prefills(self) -> bool:
        """Prefills replay CUDA graphs: asked for, graphs run, and no sliding-window layers (their
        mask is a mapping the graph does not take)."""
        return self.graphs and self.prefill_graphs and self.sliding is None

    def _graph_for(self, rows: int, width: int) -> PrefillGraph | None:
        """The prefill graph of that bucket where prefills are captured (None: prefill eagerly). A
        capture that fails turns them off: the prefill and those after it run eagerly, with a line
        on stderr."""
        if not self.captures_prefills:
            return None
        try:
            return self.prefill_graph(rows, width)
        except Exception as error:  # out of memory, or a forward that cannot be captured at this shape
            self.prefill_graphs = False  # and the graphs' memory goes, for the eager prefills
            self._prefills, self._prefill_buffer, self._prefill_pool = {}, None, None
            print(f"chef-genius: prefilling eagerly from now on: capturing a {rows} x {width} prefill failed "
                  f"({type(error).__name__}: {error})", file=sys.stderr)
            return None

    def _decode_step(self) -> None:
        """One token for every slot, all on the device (what the CUDA graph replays)."""
        state = self.state
        # On the CPU (no graph, reading a value costs nothing): only the columns some row has written.
        used = int(state.column.max()) if self.cpu_fast else self.capacity
        columns = torch.arange(used, device=self.device)
        allowed = (columns[None, :] >= state.start[:, None]) & (columns[None, :] < state.column[:, None])
        positions = (state.column - 1 - state.start)[:, None]
        self.cache.visible = used if self.cpu_fast else None
        try:
            logits = self._forward(state.last[:, None],
                                   self._mask(allowed[:, None, None, :], (state.column - 1)[:, None, None], columns),
                                   positions)
        finally:
            self.cache.visible = None
        state.commit(self._choose(logits, None))

    def _mask(self, allowed: torch.Tensor, queries: torch.Tensor, columns: torch.Tensor):
        """The forward's additive mask from ``allowed`` (batch, 1, queries, columns): one tensor;
        for a model with sliding-window layers the mapping from layer type to mask that its forward
        takes instead, the sliding layers' also hiding the keys ``sliding`` or more columns before
        their query (``queries``: each query's column, broadcastable to (batch, 1, queries)). A
        row's real tokens are contiguous columns, so columns count positions here."""
        full = additive_mask(allowed, self.dtype)
        if self.sliding is None:
            return full
        near = columns[None, None, None, :] > queries[..., None] - self.sliding
        return {"full_attention": full, "sliding_attention": additive_mask(allowed & near, self.dtype)}

    def _choose(self, logits: torch.Tensor, rows: torch.Tensor | None) -> torch.Tensor:
        """The next token of ``rows`` (all when None) from their logits, by the batch's rule."""
        state = self.state
        history, length = (state.history, state.column) if rows is None else (state.history[rows], state.column[rows])
        return next_tokens(logits, history, length, self.rule, race=self.race)

    def _step(self) -> None:
        if not self.graphs:
            self._decode_step()
            return
        if self._replay is None:
            self._replay = capture(self._decode_step)
        else:
            self._replay()


def capture(step: Callable[[], None], warmups: int = 2) -> Callable[[], None]:
    """Run ``step`` ``warmups`` times on a side stream (real steps: the state advances), then record
    it as a CUDA graph; returns the graph's replay. Recording runs nothing."""
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(warmups):
            step()
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        step()
    return graph.replay
