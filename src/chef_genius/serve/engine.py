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
import queue
import sys
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

import torch

from chef_genius.serve.batch import DecodeLoop


class EngineBusy(Exception):
    """The queue is full: the caller answers 503."""


@dataclass
class GenerationRequest:
    """Rows to write: ``n`` for each prompt (token ids), row ``p * n + j``."""

    prompts: list[list[int]]
    max_tokens: int
    settings: dict  # inference.NEUTRAL keys, resolved
    n: int = 1
    seed: int | None = None
    timeout: float | None = None  # seconds from submission; None: the engine's

    @property
    def rows(self) -> int:
        return len(self.prompts) * self.n


@dataclass(frozen=True)
class Piece:
    """Text of one row, or its end: finish_reason "stop" (end token), "length" (token limit),
    "timeout" or "error" (``text`` then says what went wrong); ``tokens``: generated so far."""

    index: int
    text: str
    finish_reason: str | None = None
    tokens: int = 0


@dataclass
class _Ticket:
    request: GenerationRequest
    loop: asyncio.AbstractEventLoop
    out: asyncio.Queue
    deadline: float
    timeout: float
    cancelled: bool = False  # the client is gone
    dropped: bool = False  # its rows have left the batch
    released: bool = False

    def send(self, piece: Piece) -> None:
        with contextlib.suppress(RuntimeError):  # the client's loop has closed
            self.loop.call_soon_threadsafe(self.out.put_nowait, piece)

    def gone(self) -> bool:
        """Cancelled, or out of time (then told so, once)."""
        if self.cancelled or self.dropped:
            return True
        if time.monotonic() > self.deadline:
            self.dropped = True
            self.send(Piece(-1, f"the request timed out after {self.timeout:g} s", "timeout"))
            return True
        return False


def deliver(pieces: list[tuple[_Ticket, Piece]]) -> None:
    """Hand pieces to their clients' event loops: one wake-up per loop, not one per piece."""
    by_loop: dict[asyncio.AbstractEventLoop, list] = {}
    for ticket, piece in pieces:
        by_loop.setdefault(ticket.loop, []).append((ticket.out, piece))

    def put(items: list) -> None:
        for out, piece in items:
            out.put_nowait(piece)

    for loop, items in by_loop.items():
        with contextlib.suppress(RuntimeError):  # that loop has closed
            loop.call_soon_threadsafe(put, items)


def _beam(request: GenerationRequest) -> bool:
    return request.settings.get("num_beams", 1) > 1


class Engine:
    """Batched generation on one loaded model; `submit` from an event loop, any thread."""

    def __init__(self, model, tokenizer, causal: bool, max_rows: int = 64, max_queue: int = 256,
                 timeout: float = 120.0, batch_wait: float = 0.01, engine: str = "chef-genius",
                 max_new_tokens: int = 4096, check_every: int = 4):
        from chef_genius.encoding import stop_ids
        from chef_genius.serve.slots import engine_kind

        self.model, self.tokenizer, self.causal = model, tokenizer, causal
        self.max_rows, self.capacity, self.timeout, self.batch_wait = max_rows, max_queue, timeout, batch_wait
        self.max_new_tokens, self.check_every = max_new_tokens, max(1, check_every)
        self.kind, reason = engine_kind(model, causal, engine)
        if reason:
            print(f"chef-genius serve: {reason}: decoding with transformers", file=sys.stderr)
        self.stops = stop_ids(tokenizer, causal)
        self.device = next(model.parameters()).device
        self.pad_id = tokenizer.pad_token_id
        config = getattr(model, "config", None)
        self.position_limit = getattr(config, "n_positions", None) or getattr(config, "max_position_embeddings", None)
        self._queue: queue.Queue[_Ticket | None] = queue.Queue()
        self._waiting: list[_Ticket] = []
        self._load = 0  # requests admitted and not yet ended
        self._lock = threading.Lock()
        self.generated_tokens = 0
        self.active_rows = 0  # rows in the batch being decoded
        self._closing = False
        self._thread = threading.Thread(target=self._work, name="chef-genius-engine", daemon=True)
        self._thread.start()

    @property
    def load(self) -> int:
        """Requests queued or being written."""
        return self._load

    def submit(self, request: GenerationRequest) -> AsyncIterator[Piece]:
        """Queue ``request``; its pieces as they are written. Raises `EngineBusy` when full.
        Closing the iterator early (a client gone) frees its place and cancels its rows."""
        with self._lock:
            if self._load >= self.capacity:
                raise EngineBusy(f"the server is busy ({self._load} requests queued or running); try again shortly")
            self._load += 1
        timeout = self.timeout if request.timeout is None else request.timeout
        ticket = _Ticket(request, asyncio.get_running_loop(), asyncio.Queue(), time.monotonic() + timeout, timeout)
        self._queue.put(ticket)
        return self._pieces(ticket)

    async def _pieces(self, ticket: _Ticket) -> AsyncIterator[Piece]:
        ended = 0
        try:
            while ended < ticket.request.rows:
                piece = await ticket.out.get()
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

    def _release(self, ticket: _Ticket) -> None:
        with self._lock:
            if not ticket.released:
                ticket.released = True
                self._load -= 1

    # The worker thread.

    def _work(self) -> None:
        if self.kind == "chef-genius":
            from chef_genius.serve.slots import SlotLoop

            SlotLoop(self).run()
            return
        while not self._closing:  # a running batch's newcomers() may have read the closing None
            if not self._waiting:
                ticket = self._queue.get()
                if ticket is None:
                    return
                self._waiting.append(ticket)
                time.sleep(self.batch_wait)  # requests sent together start together
            if self._drain():
                return
            batch = self._take_batch()
            if batch:
                self._run(batch)

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

    def _take_batch(self) -> list[_Ticket]:
        """Waiting tickets for one batch in arrival order: a beam request alone, else others up
        to ``max_rows`` rows. Cancelled and expired tickets are dropped here."""
        batch: list[_Ticket] = []
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

    def newcomers(self, room: int) -> list[_Ticket]:
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

    def _run(self, batch: list[_Ticket]) -> None:
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
        if self.causal and self.position_limit:
            return max(1, min(max_tokens, self.position_limit - prompt_width))
        return max_tokens

    def _beam(self, ticket: _Ticket) -> None:
        from chef_genius.inference import _pad, _stopped

        request = ticket.request
        ids, mask = _pad(request.prompts, self.pad_id, left=self.causal)
        settings = {**request.settings, "num_beams": max(request.settings["num_beams"], request.n)}
        out = self.model.generate(input_ids=ids.to(self.device), attention_mask=mask.to(self.device),
                                  max_new_tokens=self.limit(ids.shape[1], request.max_tokens),
                                  pad_token_id=self.pad_id, num_return_sequences=request.n,
                                  eos_token_id=self.stops if len(self.stops) > 1 else self.stops[0], **settings)
        if ticket.gone():
            return
        out = out[:, ids.shape[1]:] if self.causal else out[:, 1:]
        texts = self.tokenizer.batch_decode(out, skip_special_tokens=True, clean_up_tokenization_spaces=False)
        for index, (text, row) in enumerate(zip(texts, out.tolist(), strict=True)):
            stopped, tokens = _stopped(row, self.stops, self.pad_id)
            self.generated_tokens += tokens
            ticket.send(Piece(index, text, "stop" if stopped else "length", tokens))
