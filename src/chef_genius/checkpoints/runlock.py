"""One writer per run folder: an OS lock (``flock``) on ``RUN/.chef-genius-train.lock``, held
for the whole training by the main process.

The lock belongs to the open file, so the operating system drops it when the process ends,
however it ends (a SIGKILL included): a stale lock file never blocks a resume. The file holds
the pid of the process that holds the lock, so a second `train` on the same folder can name it.
The file itself stays (removing it would let two processes lock two different files).
"""

from __future__ import annotations

import os
from pathlib import Path

from chef_genius.errors import UserError

try:
    import fcntl
except ImportError:  # pragma: no cover - not on POSIX: no lock (Windows)
    fcntl = None

LOCK_FILE = ".chef-genius-train.lock"


class RunLock:
    """The run folder's lock; `acquire` it, `release` it (also on garbage collection)."""

    def __init__(self, run_dir: Path):
        self.path = Path(run_dir) / LOCK_FILE
        self.fd: int | None = None

    def acquire(self) -> None:
        """Take the lock, creating the run folder and the lock file if needed.

        Raises:
            UserError: another process holds it (the message names its pid), or the folder
                cannot be written.
        """
        if fcntl is None or self.fd is not None:
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as error:
            raise UserError(f"{self.path.parent}: cannot write the run folder ({error.strerror or error})") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = _read_pid(fd)
            os.close(fd)
            who = f"pid {holder}" if holder else "another process"
            raise UserError(f"{self.path.parent}: another chef-genius train ({who}) is writing this run folder; "
                            "wait for it to end, or choose another --output-dir") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self.fd = fd

    def release(self) -> None:
        if self.fd is not None:
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None

    def __del__(self) -> None:
        self.release()


def _read_pid(fd: int) -> str:
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        text = os.read(fd, 64).decode("ascii", "replace").strip()
    except OSError:
        return ""
    return text if text.isdigit() else ""
