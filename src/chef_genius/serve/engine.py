"""The generation engine of `chef-genius serve`: one worker thread, a bounded queue, batched decoding.

`Engine.submit(request)` returns an async iterator of `Piece`s (text as it is written, then each
row's end), behind which one of two decoding paths runs in the worker thread:

- "chef-genius" (causal models the generation engine supports, the default): `serve.slots`, the
  generation engine's long-lived decoder: fixed slots, one KV cache, a CUDA-graph decode step,
  newcomers prefilled into free slots every ``check_every`` steps;
- "transformers" (T5, other models, or asked for): the worker takes the waiting requests (up to
  ``max_rows`` rows), left-pads their prompts and decodes them together, one token per step for
  every row, on the model's own forward pass with its KV cache (`serve.batch`). Rows that end (an
  end token, their token limit, a cancelled or timed-out request) leave the batch and its cache at
  once; a new batch starts when all have ended.

Decoding settings are those of `chef_genius.inference` (presets in ``DECODING``, Transformers'
logits processors in Transformers' order), so a greedy recipe here is the one `generate` writes.
Beam search cannot stream (the best beam is known only at the end): a beam request is decoded by
``model.generate`` and its text comes in one piece.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import queue
import sys
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path

import torch

from chef_genius.serve.batch import DecodeLoop
from chef_genius.serve.pieces import GenerationRequest, Piece, Ticket


class EngineBusy(Exception):
    """The queue is full: the caller answers 503."""


def _beam(request: GenerationRequest) -> bool:
    return request.settings.get("num_beams", 1) > 1


class Engine:
    """Batched generation on one loaded model; `submit` from an event loop, any thread."""

    def __init__(self, model, tokenizer, family, max_rows: int = 64, max_queue: int = 256,
                 timeout: float = 120.0, batch_wait: float = 0.01, engine: str = "chef-genius",
                 max_new_tokens: int = 4096, check_every: int = 4, trace: Path | None = None,
                 fused_step: bool = True, compiled_step: bool = False, prefill_graphs: bool = True):
        """``family``: the model's `chef_genius.families.ModelFamily`; ``trace``: a file to append
        one JSON line to as each request ends (`_trace`); ``fused_step``: the slots' decode steps through
        `generation.llama_step.LlamaDecodeStep` where it supports the model (`SlotDecoder`'s ``fused``);
        ``compiled_step``: that step's layers compiled (`SlotDecoder`'s ``compiled``); ``prefill_graphs``:
        newcomers' prefills replayed as CUDA graphs on a GPU (`SlotDecoder`'s; False: eager)."""
        from chef_genius.generation.engine import position_limit
        from chef_genius.serve.slots import engine_kind

        self.model, self.tokenizer, self.family = model, tokenizer, family
        self.max_rows, self.capacity, self.timeout, self.batch_wait = max_rows, max_queue, timeout, batch_wait
        self.max_new_tokens, self.check_every = max_new_tokens, max(1, check_every)
        self.fused_step, self.compiled_step = fused_step or compiled_step, compiled_step
        self.prefill_graphs = prefill_graphs
        self.warmed: tuple[int, float] | None = None  # (prefill shapes captured at start, seconds)
        self.kind, reason = engine_kind(model, family, engine)
        if reason:
            print(f"chef-genius serve: {reason}: decoding with transformers", file=sys.stderr)
        self.stops = family.stop_ids(tokenizer)
        self.position_limit = position_limit(model)  # a causal model's slots stop there
        self.device = next(model.parameters()).device
        self.pad_id = tokenizer.pad_token_id
        self._queue: queue.Queue[Ticket | None] = queue.Queue()
        self._waiting: list[Ticket] = []
        self._load = 0  # requests admitted and not yet ended
        self._lock = threading.Lock()
        self.generated_tokens = 0
        self.active_rows = 0  # rows in the batch being decoded
        self._closing = False
        self.trace = trace
        self._trace_lock = threading.Lock()
        self._thread = threading.Thread(target=self._work, name="chef-genius-engine", daemon=True)
        self._thread.start()

    @property
    def load(self) -> int:
        """Requests queued or being written."""
        return self._load

    def submit(self, request: GenerationRequest, received: float | None = None) -> AsyncIterator[Piece]:
        """Queue ``request``; its pieces as they are written. Raises `EngineBusy` when full.
        Closing the iterator early (a client gone) frees its place and cancels its rows.
        ``received``: when (time.monotonic) its HTTP handler began, for the trace."""
        with self._lock:
            if self._load >= self.capacity:
                raise EngineBusy(f"the server is busy ({self._load} requests queued or running); try again shortly")
            self._load += 1
        timeout = self.timeout if request.timeout is None else request.timeout
        ticket = Ticket(request, asyncio.get_running_loop(), asyncio.Queue(), time.monotonic() + timeout, timeout,
                        received=received)
        self._queue.put(ticket)
        return self._pieces(ticket)

    async def _pieces(self, ticket: Ticket) -> AsyncIterator[Piece]:
        ended = 0
        try:
            while ended < ticket.request.rows:
                piece = await ticket.out.get()
                if piece.text and ticket.first_out is None:
                    ticket.first_out = time.monotonic()
                yield piece
                if piece.finish_reason in ("timeout", "error"):
                    return
                ended += piece.finish_reason is not None
        finally:
            ticket.cancelled = True  # rows still in a batch leave it at the next step
            self._release(ticket)

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join(timeout=10)

    def _release(self, ticket: Ticket) -> None:
        with self._lock:
            if ticket.released:
                return
            ticket.released = True
            self._load -= 1
        if self.trace is not None:
            self._trace(ticket)

    def _trace(self, ticket: Ticket) -> None:
        """One JSON line for an ended request: seconds from its submission to its rows' start
        (``queued_s``), to its first text handed to the server's event loop (``first_text_s``), to
        that text taken by the loop for its response (``first_out_s``) and to its end
        (``total_s``), and from its HTTP handler's start to its submission (``handler_s``: the body
        read, checked and encoded); null where it never got there. ``submitted_at`` is the
        submission's `time.monotonic()` (one clock for every process of the host: a load test joins
        its own times to these by ``seed``). A file that cannot be written
        (disk full, folder gone) loses the line, never a request."""
        def since(moment: float | None) -> float | None:
            return None if moment is None else round(moment - ticket.submitted, 6)

        line = {"rows": ticket.request.rows, "max_tokens": ticket.request.max_tokens, "seed": ticket.request.seed,
                "submitted_at": round(ticket.submitted, 6),  # time.monotonic(): a client on this host joins by it
                "handler_s": None if ticket.received is None else round(ticket.submitted - ticket.received, 6),
                "queued_s": since(ticket.started), "first_text_s": since(ticket.first_text),
                "first_out_s": since(ticket.first_out), "total_s": since(time.monotonic())}
        with contextlib.suppress(OSError), self._trace_lock, self.trace.open("a", encoding="utf-8") as out:
            out.write(json.dumps(line) + "\n")

    # The worker thread.

    def _work(self) -> None:
        if self.kind == "chef-genius":
            from chef_genius.serve.slots import SlotLoop

            SlotLoop(self).run()
            return
        while not self._closing:  # a running batch's newcomers() may have read the closing None
            if not self._waiting and not self._wait_for_work():
                return
            if self._drain():
                return
            batch = self._take_batch()
            if batch:
                self._run(batch)

    def _wait_for_work(self) -> bool:
        """Block for the next ticket (call it when nothing waits or decodes), then give the requests
        sent with it ``batch_wait`` to arrive; False when the engine closes instead."""
        ticket = self._queue.get()
        if ticket is None:
            return False
        self._waiting.append(ticket)
        time.sleep(self.batch_wait)  # requests sent together start together
        return True

    def _drain(self) -> bool:
        """Move submitted tickets to the waiting list; True when the engine is closing."""
        while True:
            try:
                ticket = self._queue.get_nowait()
            except queue.Empty:
                return self._closing
            if ticket is None:
                self._closing = True
                return True
            self._waiting.append(ticket)

    def _take_batch(self) -> list[Ticket]:
        """Waiting tickets for one batch in arrival order: a beam request alone, else others up
        to ``max_rows`` rows. Cancelled and expired tickets are dropped here."""
        batch: list[Ticket] = []
        rows, keep = 0, []
        for ticket in self._waiting:
            if ticket.gone():
                self._release(ticket)
            elif not batch:
                batch, rows = [ticket], ticket.request.rows
            elif not _beam(batch[0].request) and not _beam(ticket.request) \
                    and rows + ticket.request.rows <= self.max_rows:
                batch.append(ticket)
                rows += ticket.request.rows
            else:
                keep.append(ticket)
        self._waiting = keep
        return batch

    def newcomers(self, room: int) -> list[Ticket]:
        """Tickets that can join a running batch of ``room`` free rows, in arrival order; none
        past a waiting beam request (it runs alone, next)."""
        self._drain()
        joined, keep = [], []
        for position, ticket in enumerate(self._waiting):
            if ticket.gone():
                self._release(ticket)
            elif _beam(ticket.request):
                keep += self._waiting[position:]
                break
            elif ticket.request.rows <= room:
                joined.append(ticket)
                room -= ticket.request.rows
            else:
                keep.append(ticket)
        self._waiting = keep
        return joined

    def _run(self, batch: list[Ticket]) -> None:
        try:
            with torch.inference_mode(), torch.compiler.set_stance("force_eager"):
                if _beam(batch[0].request):
                    self.active_rows = batch[0].request.rows
                    self._beam(batch[0])
                else:
                    DecodeLoop(self, batch).run()
            self.active_rows = 0
        except Exception as error:  # a failed batch must not stop the server: its requests get the error
            self.active_rows = 0
            print(f"chef-genius serve: generation failed: {type(error).__name__}: {error}", file=sys.stderr)
            for ticket in batch:
                if not ticket.dropped:
                    ticket.send(Piece(-1, f"generation failed ({type(error).__name__})", "error"))
        for ticket in batch:
            self._release(ticket)

    def limit(self, prompt_width: int, max_tokens: int) -> int:
        return self.family.new_token_budget(self.model, prompt_width, max_tokens)

    def _beam(self, ticket: Ticket) -> None:
        ticket.start()
        from chef_genius.inference.generating import _stopped

        request = ticket.request
        ids, mask = self.family.pad_prompts(request.prompts, self.pad_id)
        settings = {**request.settings, "num_beams": max(request.settings["num_beams"], request.n)}
        out = self.model.generate(input_ids=ids.to(self.device), attention_mask=mask.to(self.device),
                                  max_new_tokens=self.limit(ids.shape[1], request.max_tokens),
                                  pad_token_id=self.pad_id, num_return_sequences=request.n,
                                  eos_token_id=self.stops if len(self.stops) > 1 else self.stops[0], **settings)
        if ticket.gone():
            return
        out = self.family.new_tokens(out, ids.shape[1])
        texts = self.tokenizer.batch_decode(out, skip_special_tokens=True, clean_up_tokenization_spaces=False)
        for index, (text, row) in enumerate(zip(texts, out.tolist(), strict=True)):
            stopped, tokens = _stopped(row, self.stops, self.pad_id)
            self.generated_tokens += tokens
            ticket.send(Piece(index, text, "stop" if stopped else "length", tokens))
