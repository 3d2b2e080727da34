"""Where a reader's bytes come from, and how they become text.

A `Source` is a plain file, a ``.gz`` / ``.bz2`` / ``.xz`` file, or one file inside a ``.zip``
(each recipe file in a zip is its own source); all are decompressed as a stream, never whole.
`detect_encoding` picks the text encoding of a source from its first bytes: a byte-order mark
(UTF-8, UTF-16), else UTF-8 when those bytes are valid UTF-8, else cp1252 (Windows Latin-1) when
they hold no valid multi-byte UTF-8 sequence at all; a file that mixes valid UTF-8 with other
bytes stays UTF-8, and only its undecodable rows are rejected. ``--encoding`` forces one.

What cannot be read (not a gzip file, a truncated stream, an encrypted zip member) is described
in words, never with the raw bytes that the library errors quote.
"""

from __future__ import annotations

import bz2
import codecs
import contextlib
import gzip
import io
import lzma
import re
import zipfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from chef_genius.errors import UserError

COMPRESSED = {".gz": (gzip.GzipFile, "gzip"), ".bz2": (bz2.BZ2File, "bz2"), ".xz": (lzma.LZMAFile, "xz")}
DETECT_BYTES = 16 * 2**20  # the encoding is decided on this much of each source
# Errors a damaged or truncated container raises while it is read (gzip.BadGzipFile and bz2's
# "Invalid data stream" are OSErrors).
STREAM_ERRORS = (OSError, EOFError, zlib.error, lzma.LZMAError, zipfile.BadZipFile, RuntimeError,
                 NotImplementedError, UnicodeDecodeError)
_NON_ASCII_TEXT = re.compile("[^\x00-\x7f\ufffd]")
_UTF16_BOMS = (codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)


@dataclass(frozen=True)
class Source:
    """One recipe file: ``path`` on disk, or the ``member`` of the zip at ``path``.

    Attributes:
        compression: "gzip", "bz2", "xz", "zip" or None.
        label: how messages and the data report name it (``recipes.zip:a.csv`` for a member).
        name: the file name that says its format (``a.csv`` for ``a.csv.gz``).
    """

    path: Path
    member: str | None = None
    compression: str | None = None

    @property
    def label(self) -> str:
        return f"{self.path}:{self.member}" if self.member else str(self.path)

    @property
    def name(self) -> str:
        if self.member:
            return Path(self.member).name
        return self.path.stem if self.compression else self.path.name

    @contextlib.contextmanager
    def open(self) -> Iterator[tuple[BinaryIO, Callable[[], int], int]]:
        """``(decompressed binary stream, bytes of the source read so far, source size)``.

        Raises:
            OSError and the other `STREAM_ERRORS`: see `describe_error`.
        """
        if self.member is not None:
            with zipfile.ZipFile(self.path) as archive:
                info = archive.getinfo(self.member)
                with archive.open(info) as stream:
                    yield stream, stream.tell, info.file_size
            return
        with open(self.path, "rb") as raw:
            size = self.path.stat().st_size
            if self.compression is None:
                yield raw, raw.tell, size
                return
            opener = next(o for o, kind in COMPRESSED.values() if kind == self.compression)
            with opener(fileobj=raw) if opener is gzip.GzipFile else opener(raw) as stream:
                yield stream, raw.tell, size

    def head(self, size: int) -> bytes:
        """Up to ``size`` decompressed bytes from the start.

        Raises:
            UserError: the source cannot be read (one line, in words).
        """
        parts: list[bytes] = []
        try:
            with self.open() as (stream, _, _):
                left, read = size, getattr(stream, "read1", stream.read)  # read1: what one step decompressed
                while left > 0:
                    chunk = read(min(left, 1 << 16))
                    if not chunk:
                        break
                    parts.append(chunk)
                    left -= len(chunk)
        except STREAM_ERRORS as error:
            if not parts:  # broken later: the rows before the break are read, the break is a reject
                raise UserError(f"{self.label}: {describe_error(error, self)}") from None
        return b"".join(parts)


def sources_in(path: Path) -> list[Source]:
    """The sources of a file: itself, or each recipe file of a zip (folders, hidden files and
    macOS resource forks left out).

    Raises:
        UserError: a zip that cannot be opened or holds no file.
    """
    suffix = path.suffix.lower()
    if suffix in COMPRESSED:
        return [Source(path, None, COMPRESSED[suffix][1])]
    if suffix != ".zip":
        return [Source(path)]
    try:
        with zipfile.ZipFile(path) as archive:
            members = [info.filename for info in archive.infolist()
                       if not info.is_dir() and not info.filename.startswith("__MACOSX/")
                       and not Path(info.filename).name.startswith(".")]
    except (zipfile.BadZipFile, OSError, EOFError):
        raise UserError(f"{path}: is not a zip file, or is damaged") from None
    if not members:
        raise UserError(f"{path}: the zip holds no file")
    return [Source(path, member, "zip") for member in members]


def describe_error(error: BaseException, source: Source | None = None) -> str:
    """What went wrong reading a source, in words (library messages quote raw bytes)."""
    kind = source.compression if source is not None else None
    if isinstance(error, UnicodeDecodeError):
        return f"is not valid {error.encoding} text; name its encoding with --encoding"
    if isinstance(error, EOFError):
        return f"the {kind or 'compressed'} stream ends early (a truncated file)"
    if isinstance(error, RuntimeError) and "encrypted" in str(error):
        return "the zip member is encrypted"
    if isinstance(error, NotImplementedError):
        return "the zip member uses a compression method Python cannot read"
    if isinstance(error, (zlib.error, lzma.LZMAError, zipfile.BadZipFile, gzip.BadGzipFile)) or (
            kind is not None and isinstance(error, OSError) and not error.strerror):
        return f"is not a {kind or 'compressed'} file, or its data is damaged"
    if isinstance(error, OSError):
        return f"cannot be read: {error.strerror or type(error).__name__}"
    return f"cannot be read ({type(error).__name__})"


def check_encoding(name: str) -> str:
    """A codec name, checked; UTF-8 reads (and drops) a byte-order mark.

    Raises:
        UserError: Python has no such codec.
    """
    try:
        codec = codecs.lookup(name)
    except LookupError:
        raise UserError(f"--encoding: unknown encoding '{name}'") from None
    return "utf-8-sig" if codec.name in ("utf-8", "utf-8-sig") else codec.name


def detect_encoding(head: bytes, whole: bool = True) -> str:
    """``utf-8-sig`` (a UTF-8 byte-order mark), ``utf-16`` (a UTF-16 one), ``utf-8``, or
    ``cp1252`` for bytes that are not UTF-8 and hold no valid multi-byte UTF-8 sequence.
    ``whole``: ``head`` is the whole file (else its end may cut a character)."""
    if head.startswith(codecs.BOM_UTF8):
        return "utf-8-sig"
    if head.startswith(_UTF16_BOMS):
        return "utf-16"
    try:
        head.decode("utf-8")
        return "utf-8"
    except UnicodeDecodeError as error:
        if not whole and error.start >= len(head) - 3 and error.reason == "unexpected end of data":
            return "utf-8"  # a character cut by the end of the sample
    if _NON_ASCII_TEXT.search(head.decode("utf-8", "replace")):
        return "utf-8"  # mixed: real UTF-8 text, with some rows in another encoding
    return "cp1252"


def mostly_utf8(head: bytes, whole: bool = True) -> bool:
    """Whether most of the sample's lines that hold non-ASCII bytes are valid UTF-8: text that an
    encoding forced on it (``--encoding cp1252``) would turn into mojibake. ``whole``: as in
    `detect_encoding` (else the last line, perhaps cut, is left out)."""
    lines = head.splitlines()
    if not whole:
        lines = lines[:-1]
    non_ascii = [line for line in lines if not line.isascii()]
    valid = sum(_is_utf8(line) for line in non_ascii)
    return bool(non_ascii) and valid * 2 > len(non_ascii)


def _is_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def decoded_head(head: bytes, encoding: str) -> str:
    """The sample as text, for detecting the layout (a character cut at its end is dropped)."""
    return head.decode(encoding, "replace")


def printable(text: str, limit: int = 200) -> str:
    """Text fit for a one-line message: control characters and undecodable bytes shown as '?',
    cut at ``limit`` characters."""
    cleaned = "".join(c if c.isprintable() and not 0xD800 <= ord(c) <= 0xDFFF else "?" for c in text[:limit])
    return cleaned + ("..." if len(text) > limit else "")


def first_line(text: str) -> str:
    """The first line, whatever the line ending (LF, CRLF or CR)."""
    return re.split(r"\r\n|\r|\n", text, maxsplit=1)[0]


class Utf8Stream(io.RawIOBase):
    """Bytes of another encoding, re-encoded as UTF-8 as they are read (for ijson); characters
    that cannot be decoded become U+FFFD."""

    def __init__(self, stream: BinaryIO, encoding: str):
        self.text = io.TextIOWrapper(stream, encoding=encoding, errors="replace", newline="")
        self.pending = b""

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        while not self.pending:
            chunk = self.text.read(1 << 16)
            if not chunk:
                return 0
            self.pending = chunk.encode("utf-8", "surrogatepass")
        size = min(len(buffer), len(self.pending))
        buffer[:size] = self.pending[:size]
        self.pending = self.pending[size:]
        return size
