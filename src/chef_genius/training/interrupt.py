"""Ctrl-C and SIGTERM during training: finish the optimizer step under way, write a checkpoint
(the same `RunCheckpoints` write as the periodic ones, so `--resume auto` continues from it), and
exit saying the command that resumes the run. A second signal quits at once (the newest periodic
checkpoint stays, as after a kill).

Under several processes every rank gets the signal from torchrun or the terminal, but perhaps at
different steps: the trainer adds this rank's request to the step's token counts, which every
rank already sums, so all ranks stop after the same step.
"""

from __future__ import annotations

import shlex
import signal
import sys
import threading
from pathlib import Path
from types import FrameType

from chef_genius.errors import TrainingStopped

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class TrainingInterrupted(TrainingStopped):
    """Training stopped on a signal after saving a checkpoint; the message says how to resume."""

    def __init__(self, message: str, signal_number: int):
        super().__init__(message)
        self.signal_number = signal_number


class StopRequest:
    """While entered, SIGINT and SIGTERM set `requested` instead of raising; a second one raises
    KeyboardInterrupt at once. Outside the main thread (where handlers cannot be installed) it
    does nothing and a signal acts as before."""

    def __init__(self) -> None:
        self.signal_number: int | None = None
        self._previous: dict[int, object] = {}

    @property
    def requested(self) -> bool:
        return self.signal_number is not None

    def __enter__(self) -> StopRequest:
        if threading.current_thread() is threading.main_thread():
            for number in SIGNALS:
                self._previous[number] = signal.signal(number, self._handle)
        return self

    def __exit__(self, *exc_info: object) -> None:
        for number, handler in self._previous.items():
            signal.signal(number, handler)
        self._previous.clear()

    def _handle(self, number: int, frame: FrameType | None) -> None:
        if self.requested:
            self.__exit__()
            raise KeyboardInterrupt
        self.signal_number = number
        print(f"\nchef-genius: {signal.Signals(number).name}: stopping after this optimizer step to save a "
              "checkpoint (press Ctrl-C again to quit at once, keeping only the last periodic checkpoint)",
              file=sys.stderr, flush=True)


def resume_command(run_dir: Path) -> str:
    """The command that resumes a run with the settings it was started with (its config.yaml)."""
    return f"chef-genius train --config {shlex.quote(str(run_dir / 'config.yaml'))} --resume auto"


def ignore_interrupts(worker_id: int) -> None:
    """A DataLoader worker's start: Ctrl-C reaches the terminal's whole process group, workers
    included; they leave it to the trainer, which stops after the step and saves (a worker killed
    by it would fail the step instead)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
