"""The serving engine's worker on the generation engine's decoder (`generation.slots.SlotDecoder`).

One decoder lives as long as the server: ``--max-batch`` slots sharing one KV cache, the decode
step captured once as a CUDA graph on a GPU. Each turn of the loop the worker

1. takes waiting requests into free slots, all of their rows at once (a request's ``n`` rows
   stay together until the last one ends), and prefills them in one pass;
2. reads back, in one copy, every slot's new tokens and whether it ended (waiting for the steps
   launched the turn before, and for the prefill);
3. launches the next ``check_every`` decode steps for every slot, then, while the device runs
   them, streams the new text to its client (`StreamingDetokenizer`, `pieces.deliver`) and frees
   the slots of requests that are done, cancelled (the client went away) or out of time.

So the host's work of a turn (text, pieces, the event loop's share of the GIL) overlaps the
device's steps instead of idling it, and a newcomer's first token (its prefill's) comes back in
the turn it was admitted. A freed row may have decoded one turn more than it needed; nothing
reads it (a finished row writes nothing; a cancelled one is ended by `free` before the next). The
cost: a row's end is seen one turn later, so its slot takes a newcomer ``check_every`` steps later.

Each row decodes with its own request's settings (`generation.rowrules`). A request the per-row
rules cannot express (beam search, a repetition penalty), or with more rows than there are slots,
is decoded by the Transformers path (`serve.batch`, or ``model.generate`` for beams) once every
slot is free.

Seeds: on the CPU (no graph) a seeded request's rows draw from its own generator, as `generate`
draws with that seed, so it writes what `generate` writes. On a GPU the graph draws by the
exponential race with noise hashed from (seed, row, token count, token): a seeded request writes
the same text whatever else the server is doing, but not the text `generate` draws.
"""

from __future__ import annotations

import sys
import time

import torch

from chef_genius.serve.decoding import StreamingDetokenizer
from chef_genius.serve.pieces import Piece, deliver, row_pieces

KINDS = ("chef-genius", "transformers")
_GOLDEN = 0x9E3779B97F4A7C15


def engine_kind(model, family, asked: str) -> tuple[str, str | None]:
    """(the path that will decode, why it is not the one asked for: None when it is)."""
    from chef_genius.generation import unsupported
    from chef_genius.inference import NEUTRAL

    if asked not in KINDS:
        raise ValueError(f"unknown serve engine '{asked}' (choose from {', '.join(KINDS)})")
    if asked == "transformers":
        return asked, None
    if not family.decodes_in_slots:
        return "transformers", "the generation engine serves causal models only"
    reason = unsupported(model, family, NEUTRAL)
    return ("transformers", reason) if reason else ("chef-genius", None)


def _per_row_reason(settings: dict, largest_ngram: int) -> str | None:
    from chef_genius.generation.rowrules import RowRules

    reason = RowRules.check(settings)
    if reason is None and settings.get("no_repeat_ngram_size", 0) > largest_ngram:
        reason = "an n-gram ban larger than the decoder's"
    return reason


class SlotLoop:
    """Runs in the `serve.engine.Engine`'s worker thread until the engine closes."""

    LARGEST_NGRAM = 10  # the presets' largest ban (careful)

    def __init__(self, engine):
        self.engine = engine
        self.every = engine.check_every
        self.decoder = None
        self.owner: list[tuple | None] = [None] * engine.max_rows  # slot -> (ticket, row)
        self.ended: list[bool] = [False] * engine.max_rows
        self.counts = [0] * engine.max_rows
        self.text = StreamingDetokenizer(engine.tokenizer, engine.max_rows)
        # None: where the decoder's graphs run; False when the engine says so, or once capturing failed
        self.prefill_graphs: bool | None = None if engine.prefill_graphs else False

    def _decoder(self):
        from chef_genius.generation.slots import SlotDecoder

        if self.decoder is None:
            engine = self.engine
            decoder = SlotDecoder(engine.model, engine.stops, engine.pad_id, engine.max_rows,
                                  engine.max_new_tokens, self.LARGEST_NGRAM, graphs=True,
                                  position_limit=engine.position_limit, window=self.every + 3,
                                  fused=engine.fused_step, compiled=engine.compiled_step,
                                  prefill_graphs=self.prefill_graphs)
            if not self._warm(decoder):  # its graphs and their memory go before another is made
                del decoder
                self.prefill_graphs = False
                return self._decoder()
            self.decoder = decoder
        return self.decoder

    def busy(self) -> list[int]:
        return [slot for slot, owner in enumerate(self.owner) if owner is not None]

    def run(self) -> None:
        engine = self.engine
        with torch.inference_mode(), torch.compiler.set_stance("force_eager"):
            if engine.device.type == "cuda":
                try:
                    self._decoder()  # made, and its usual prefills captured, before the first request
                except Exception as error:  # the server goes on: the next requests get the error, if it stays
                    self._fail(error)
            while True:
                if not self.busy() and not engine._waiting and not engine._wait_for_work():
                    return
                if engine._drain():
                    return
                try:
                    alone = self._admit()
                    if alone is not None:
                        engine._run([alone])
                    elif self.busy():  # self.decoder, not a local: a failed one must not outlive `_fail`
                        written = self._decoder().read()  # waits for the steps in flight and any prefill
                        self.decoder.advance(self.every)  # the next turn's steps run while this one streams
                        self._collect(written)
                        if not self.busy():  # idle: the steps in flight end before a graph or cache is let go
                            self.decoder.read()
                except Exception as error:  # the server goes on: the rows decoding get the error
                    self._fail(error)
                engine.active_rows = len(self.busy())

    def _warm(self, decoder) -> bool:
        """Capture ``decoder``'s usual prefill shapes (`SlotDecoder.warm_prefills`; a new decoder
        after a failure too); False when capturing failed (the caller then prefills eagerly)."""
        began = time.monotonic()
        try:
            count = decoder.warm_prefills()
        except Exception as error:  # the server still serves, with eager prefills
            print(f"chef-genius serve: prefills not captured ({type(error).__name__}: {error}); prefilling eagerly",
                  file=sys.stderr)
            return False
        if count:
            self.engine.warmed = (count, round(time.monotonic() - began, 3))
            print(f"chef-genius serve: {count} prefill shapes captured in {self.engine.warmed[1]:.1f} s",
                  file=sys.stderr, flush=True)
        return True

    def _admit(self):
        """Take waiting requests into free slots and prefill them; a request for the Transformers
        path is returned instead once no slot is busy (it runs alone)."""
        engine = self.engine
        free = [slot for slot, owner in enumerate(self.owner) if owner is None]
        busy = len(free) < len(self.owner)
        taken, keep = [], []
        for position, ticket in enumerate(engine._waiting):
            if ticket.gone():
                engine._release(ticket)
            elif _per_row_reason(ticket.request.settings, self.LARGEST_NGRAM) or ticket.request.rows > len(self.owner):
                if not busy and not taken:
                    engine._waiting = keep + engine._waiting[position + 1:]
                    return ticket
                keep += engine._waiting[position:]  # it waits for the slots to empty; so do those after it
                break
            elif ticket.request.rows <= len(free) - sum(t.request.rows for t in taken):
                taken.append(ticket)
            else:
                keep.append(ticket)
        engine._waiting = keep
        if taken:
            self._prefill(taken, free, busy)
        return None

    def _prefill(self, tickets: list, free: list[int], busy: bool) -> None:
        decoder = self._decoder()
        slots, prompts, limits, settings, seeds, generators = [], [], [], [], [], []
        for ticket in tickets:
            ticket.start()
            request = ticket.request
            generator = None
            if request.seed is not None and not decoder.race:
                generator = torch.Generator(device=decoder.device).manual_seed(request.seed)
            for row in range(request.rows):
                slot = free[len(slots)]
                prompt = request.prompts[row // request.n]
                self.owner[slot], self.ended[slot], self.counts[slot] = (ticket, row), False, 0
                self.text.reset(slot)
                slots.append(slot)
                prompts.append(prompt)
                limits.append(self.engine.limit(len(prompt), request.max_tokens))
                settings.append(request.settings)
                seeds.append(None if request.seed is None else request.seed + row * _GOLDEN)
                generators.append(generator)
        self.engine.active_rows = len(self.busy())
        decoder.admit(slots, prompts, limits, settings, seeds, generators, busy=busy)

    def _collect(self, written: tuple[list[int], list[bool], list[list[int]]]) -> None:
        """Stream what the rows wrote (``written``: `SlotDecoder.read`'s); free the slots of requests
        done or gone."""
        counts, finished, fresh = written
        stops, ended, tickets = set(self.engine.stops), {}, {}
        for slot in self.busy():
            ticket, _ = self.owner[slot]
            tickets[id(ticket)] = ticket
            if self.ended[slot] or ticket.gone():
                continue
            tokens = fresh[slot]
            stopped = bool(tokens) and tokens[-1] in stops and finished[slot]
            for token in tokens[:-1] if stopped else tokens:
                self.text.push(slot, token)
            self.counts[slot] = counts[slot] - stopped
            if finished[slot]:
                ended[slot] = "stop" if stopped else "length"
        rows = [s for s in self.busy() if not self.ended[s] and not self.owner[s][0].gone()]
        pieces, tokens = row_pieces(rows, self.owner, self.counts, self.text, ended)
        for slot in rows:
            if slot in ended:
                self.ended[slot] = True
        self.engine.generated_tokens += tokens
        deliver(pieces)
        for ticket in tickets.values():
            owned = [s for s in self.busy() if self.owner[s][0] is ticket]
            if ticket.gone() or all(self.ended[s] for s in owned):
                self._free(ticket, owned)

    def _free(self, ticket, slots: list[int]) -> None:
        self.decoder.free(slots)
        for slot in slots:
            self.owner[slot] = None
        self.engine._release(ticket)

    def _fail(self, error: Exception) -> None:

        print(f"chef-genius serve: generation failed: {type(error).__name__}: {error}", file=sys.stderr)
        for slot in self.busy():
            ticket, _ = self.owner[slot]
            if not ticket.dropped and not ticket.released:
                ticket.send(Piece(-1, f"generation failed ({type(error).__name__})", "error"))
            self.owner[slot] = None
            self.engine._release(ticket)
        if self.decoder is not None and not self.decoder.prefill_graphs:
            self.prefill_graphs = False  # its captures failed (or were never on): the next one's would too
        self.decoder = None  # its state may be half-written: a fresh one for the next requests
