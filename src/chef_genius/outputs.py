"""Output folders that chef-genius fills: it never deletes or overwrites what it did not write.

A command writes its files into a fresh staging folder, then installs them:

- the destination does not exist: the staging folder is renamed into place;
- the destination is empty, or holds this command's marker file (so chef-genius wrote it): each
  of the command's files is moved in with `os.replace`, and every other file stays; files that
  the previous marker lists and the new output lacks are removed (chef-genius wrote them);
- the destination holds other files and no marker: refused, unless ``overwrite``, which moves
  the command's files in the same way and removes nothing.

A file that is an input of the same command is never replaced, nor is a folder that has the name
of an output file. Failures (a read-only place, a full disk) end as one-line `UserError`s, and
the staging folder is removed, leaving the destination as it was.

The marker (``.chef-genius-dataset``, ``.chef-genius-model``) is JSON: tool, kind, version,
created time (UTC) and the names of the files the command wrote.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from chef_genius import __version__
from chef_genius.errors import UserError

STAGING_PREFIX = ".chef-genius-staging-"


@dataclass
class OutputFolder:
    """One command's output folder.

    Attributes:
        path: the destination.
        marker: name of the marker file that says chef-genius wrote the folder.
        kind: what the folder holds, in words ("dataset", "merged model"); goes into the marker.
        overwrite: write into a non-empty folder without the marker (keeping its other files).
    """

    path: Path
    marker: str
    kind: str
    overwrite: bool = False

    def __post_init__(self) -> None:
        self.path = Path(os.path.abspath(self.path))  # "." has a name, and a parent to stage beside

    # ------------------------------------------------------------------ state
    def state(self) -> str:
        """``absent``, ``empty``, ``ours`` (holds the marker) or ``foreign``.

        Raises:
            UserError: the path is a file, a broken link, or cannot be listed.
        """
        path = self.path
        try:
            if not path.exists():
                if path.is_symlink():
                    raise UserError(f"{path}: is a broken link; not writing through it")
                return "absent"
            if not path.is_dir():
                raise UserError(f"{path}: exists and is not a folder")
            entries = [e for e in os.listdir(path) if not e.startswith(STAGING_PREFIX)]
        except OSError as error:
            raise UserError(f"{path}: cannot be read: {error.strerror}") from None
        if not entries:
            return "empty"
        return "ours" if self.marker_files() is not None else "foreign"

    def marker_files(self) -> list[str] | None:
        """The files the folder's marker lists, or None without a readable marker of this kind."""
        try:
            data = json.loads((self.path / self.marker).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        if not isinstance(data, dict) or data.get("tool") != "chef-genius" or data.get("kind") != self.kind:
            return None
        files = data.get("files")
        return [f for f in files if isinstance(f, str)] if isinstance(files, list) else []

    def check(self, flag: str = "--overwrite") -> str:
        """The state, after refusing a foreign folder without ``overwrite``.

        Raises:
            UserError: a foreign non-empty folder (the message names ``flag``), or see `state`.
        """
        state = self.state()
        if state == "foreign" and not self.overwrite:
            raise UserError(f"{self.path}: is not empty and holds no chef-genius {self.kind} "
                            f"({self.marker}); choose an empty or new folder, or pass {flag} to write the "
                            f"{self.kind}'s files into it (its other files are kept)")
        return state

    # ---------------------------------------------------------------- staging
    def stage(self) -> Path:
        """A fresh staging folder on the destination's file system (inside it if it exists).

        Raises:
            UserError: the place cannot be written.
        """
        token = f"{os.getpid()}-{secrets.token_hex(4)}"
        try:
            if self.path.is_dir():
                staging = self.path / f"{STAGING_PREFIX}{token}"
            else:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                staging = self.path.parent / f".{self.path.name}.partial-{token}"
            staging.mkdir()  # fails if it exists: a fresh folder that only this command writes
        except OSError as error:
            raise UserError(f"{self.path}: cannot write there: {error.strerror or error}") from None
        return staging

    @staticmethod
    def discard(staging: Path) -> None:
        """Remove a staging folder (this command created it, and wrote all it holds)."""
        shutil.rmtree(staging, ignore_errors=True)

    def install(self, staging: Path, inputs: Iterable[Path] = ()) -> None:
        """Write the marker, move the staged files into the destination, remove the staging folder.

        Args:
            staging: from `stage`, holding the command's files.
            inputs: files the command read; none of them is ever replaced.

        Raises:
            UserError: the destination changed into a foreign folder, an output name is taken by a
                folder or an input file, or a move failed. The staging folder is removed then.
        """
        try:
            names = sorted(os.listdir(staging))
            self._write_marker(staging, names)
            state = self.check()
            if state == "absent":
                os.rename(staging, self.path)
                return
            old = set(self.marker_files() or []) if state == "ours" else set()
            self.check_outputs(names, inputs)
            for name in [n for n in names if n != self.marker] + [self.marker]:
                os.replace(staging / name, self.path / name)
            for name in sorted(old - set(names) - {self.marker}):
                if name != Path(name).name or name in (".", ".."):
                    continue  # only plain names inside the folder, whatever a marker says
                stale = self.path / name
                if stale.is_symlink() or stale.is_file():
                    stale.unlink()
            staging.rmdir()
        except OSError as error:
            self.discard(staging)
            raise UserError(f"{self.path}: cannot write there: {error.strerror or error}") from None
        except BaseException:
            self.discard(staging)
            raise

    def _write_marker(self, staging: Path, names: list[str]) -> None:
        marker = {"tool": "chef-genius", "kind": self.kind, "version": __version__,
                  "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                  "files": [n for n in names if n != self.marker]}
        (staging / self.marker).write_text(json.dumps(marker, indent=2) + "\n", encoding="utf-8")

    def check_outputs(self, names: Iterable[str], inputs: Iterable[Path] = ()) -> None:
        """Refuse output names taken by a folder, or by one of the command's input files.

        Raises:
            UserError: naming the first such path.
        """
        inputs = list(inputs)
        for name in names:
            target = self.path / name
            if target.is_dir() and not target.is_symlink():
                raise UserError(f"{target}: is a folder; not replacing it with the {self.kind}'s file")
            if target.exists() and any(_same_file(target, source) for source in inputs):
                raise UserError(f"{target}: is an input of this command; not overwriting it "
                                f"(choose another output folder)")


def _same_file(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False
