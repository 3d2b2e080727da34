"""Errors a user can act on: the CLI prints them as one line and exits with a non-zero code."""

from __future__ import annotations

from pathlib import Path


class UserError(Exception):
    """Bad input from the user (a file, a flag, a config value). Printed without a traceback."""


class TrainingStopped(Exception):
    """Training cannot go on (diverged, out of memory, a checkpoint not written); the message
    says what to do."""


def read_user_text(path: Path, what: str = "file", encoding: str = "utf-8") -> str:
    """A user's text file, whole; each way it can fail is one `UserError` line naming ``what``."""
    if path.is_dir():
        raise UserError(f"{path}: is a directory, not a {what}")
    try:
        return path.read_text(encoding=encoding)
    except FileNotFoundError:
        raise UserError(f"{path}: no such {what}") from None
    except UnicodeDecodeError:
        raise UserError(f"{path}: is not UTF-8 text") from None
    except OSError as error:
        raise UserError(f"{path}: cannot be read: {error.strerror or error}") from None
