"""What a client asks the serving engine for and what it gets back: a request's rows, the pieces
of text streamed to it, the ticket that follows it through the decode loop, and the delivery of
pieces to each client's event loop (`chef_genius.serve.engine` queues, `serve.batch` decodes)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass


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
class Ticket:
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


def deliver(pieces: list[tuple[Ticket, Piece]]) -> None:
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
