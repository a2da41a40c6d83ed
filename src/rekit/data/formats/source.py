"""Opening an input file as text: encoding detection and line iteration with exact line numbers."""

from __future__ import annotations

import codecs
from collections.abc import Iterator
from pathlib import Path

from rekit.errors import ConfigError, DataError

# Longest BOMs first: the UTF-32-LE BOM starts with the UTF-16-LE one.
_BOMS: tuple[tuple[bytes, str], ...] = (
    (codecs.BOM_UTF32_LE, "utf-32"),
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF8, "utf-8-sig"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)
_UTF8_NAMES = {"utf-8", "utf-8-sig"}
_HINT = "re-save it as UTF-8, or name its encoding when reading (e.g. cp949 for Korean Windows files)"


def check_file(path: Path) -> None:
    if not path.exists():
        raise DataError("no such file", path=str(path))
    if not path.is_file():
        raise DataError("not a regular file (a directory?)", path=str(path))


def detect_encoding(path: Path, requested: str | None) -> str:
    """The encoding to read `path` with: the requested one, else from the BOM, else UTF-8."""
    if requested:
        try:
            return codecs.lookup(requested).name
        except LookupError:
            raise ConfigError(f"unknown encoding {requested!r}") from None
    try:
        with open(path, "rb") as f:
            head = f.read(4096)
    except OSError as e:
        raise DataError(f"cannot read the file: {e.strerror or e}", path=str(path)) from None
    if not head:
        raise DataError("the file is empty", path=str(path))
    for bom, name in _BOMS:
        if head.startswith(bom):
            return name
    if head.count(0) * 8 > len(head):
        # Text in UTF-8 has NUL bytes rarely if ever; UTF-16/32 without a BOM has them in most
        # ASCII characters (header, digits, punctuation), and so does binary data.
        raise DataError(
            "the file contains NUL bytes: it is binary, or UTF-16/UTF-32 without a byte-order "
            "mark; re-save it as UTF-8, or name its encoding when reading (e.g. utf-16-le)",
            path=str(path),
        )
    return "utf-8"


def read_head(path: Path, encoding: str, chars: int = 65536) -> str:
    """The first `chars` characters, for sniffing only (undecodable bytes replaced)."""
    with open(path, encoding=encoding, errors="replace", newline="") as f:
        text = f.read(chars)
    return text.lstrip("\ufeff")


def iter_lines(path: Path, encoding: str) -> Iterator[str]:
    """Lines with their line endings kept (what `csv` wants), a leading BOM removed.

    UTF-8 is decoded line by line from bytes so that a decoding error names its exact line;
    other encodings go through a text stream and name the line approximately.
    """
    if encoding in _UTF8_NAMES:
        yield from _iter_utf8(path)
        return
    line_no = 0
    try:
        with open(path, encoding=encoding, newline="") as f:
            for line_no, line in enumerate(f, 1):
                yield line.lstrip("\ufeff") if line_no == 1 else line
    except UnicodeError as e:
        why = getattr(e, "reason", e)  # a decoding error says why; other UnicodeErrors are their own message
        raise DataError(f"not valid {encoding} text near line {line_no + 1} ({why}); {_HINT}", path=str(path)) from None


def _iter_utf8(path: Path) -> Iterator[str]:
    with open(path, "rb") as f:
        for line_no, raw in enumerate(f, 1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                bad = raw[e.start]
                raise DataError(
                    f"line {line_no} is not valid UTF-8 (byte 0x{bad:02x} at byte {e.start + 1} of the line); {_HINT}",
                    path=str(path),
                ) from None
            yield line.lstrip("\ufeff") if line_no == 1 else line


def open_text(path: Path, encoding: str):  # -> TextIO
    """A text stream for whole-document formats (JSON); decoding errors surface on read."""
    if encoding == "utf-8":
        encoding = "utf-8-sig"  # tolerate a BOM even when the caller named plain UTF-8
    return open(path, encoding=encoding, newline="")


def decode_error(path: Path, encoding: str, err: UnicodeError) -> DataError:
    return DataError(f"not valid {encoding} text ({getattr(err, 'reason', err)}); {_HINT}", path=str(path))
