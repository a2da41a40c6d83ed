"""The official KLUE-RE JSON release: one JSON list of objects, streamed element by element.

`{guid, sentence, subject_entity: {word, start_idx, end_idx (inclusive), type}, object_entity,
label, source}`. Integer labels index the official release order (`KLUE_RE_OFFICIAL_ORDER`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import TextIO

from rekit.data.formats.fields import BadRow, Context, RawRow, RowProblem, community_label
from rekit.data.formats.objects import ObjectRows
from rekit.data.labels import KLUE_RE_OFFICIAL_ORDER
from rekit.data.literal import HugeNumber, parse_json_number
from rekit.errors import DataError

_WS = re.compile(r"[ \t\r\n]*")
_CHUNK = 1 << 16


def klue_label(value: object) -> tuple[str | None, str | None]:
    if isinstance(value, HugeNumber):
        raise RowProblem(f"label is {value}, not a label")
    if isinstance(value, int) and not isinstance(value, bool):
        if value == 100:
            return None, "label 100"
        if 0 <= value < len(KLUE_RE_OFFICIAL_ORDER):
            return KLUE_RE_OFFICIAL_ORDER[value], None
        raise RowProblem(
            f"integer label {value} is outside 0..{len(KLUE_RE_OFFICIAL_ORDER) - 1} "
            "(the official KLUE-RE label order)"
        )
    return community_label(value)


def read_rows(stream: TextIO, ctx: Context) -> Iterator[RawRow | BadRow]:
    builder = ObjectRows(ctx, klue_label)
    ints_noted = False
    for index, line, value in ArrayScanner(stream, ctx.path):
        if not ints_noted and isinstance(value, dict) and type(value.get("label")) is int:
            ctx.note("integer labels mapped through the official KLUE-RE order (Hugging Face klue/re)")
            ints_noted = True
        try:
            yield builder.build(value, index, line)
        except RowProblem as e:
            rid = value.get("guid", value.get("id")) if isinstance(value, dict) else None
            yield BadRow(index, None if rid is None else str(rid), str(e), line)


class ArrayScanner:
    """Yields (1-based index, line, value) for each element of a top-level JSON list.

    Holds one buffer of text (a chunk, or one element if larger) instead of the whole
    document. A syntax error cannot be skipped (there is no reliable place to resume), so
    it is a `DataError` naming the element and line.
    """

    def __init__(self, stream: TextIO, path: str):
        self.stream, self.path = stream, path
        self.buf, self.pos = "", 0
        self.line_no, self.line_pos = 0, 0  # newlines counted in buf[:line_pos] and before it
        self.decoder = json.JSONDecoder(parse_int=parse_json_number)  # a 5,000-digit number: a bad row

    def _more(self, size: int = _CHUNK) -> bool:
        data = self.stream.read(size)
        if not data:
            return False
        self.line_no += self.buf.count("\n", self.line_pos, self.pos)
        self.buf, self.pos, self.line_pos = self.buf[self.pos :] + data, 0, 0
        return True

    def _line(self) -> int:
        self.line_no += self.buf.count("\n", self.line_pos, self.pos)
        self.line_pos = self.pos
        return self.line_no + 1

    def _peek(self) -> str:
        """The next non-blank character ('' at the end of the file)."""
        while True:
            self.pos = _WS.match(self.buf, self.pos).end()  # type: ignore[union-attr]
            if self.pos < len(self.buf):
                return self.buf[self.pos]
            if not self._more():
                return ""

    def __iter__(self) -> Iterator[tuple[int, int, object]]:
        first = self._peek()
        if first != "[":
            raise DataError(self._not_a_list(first), path=self.path)
        self.pos += 1
        index = 0
        if self._peek() == "]":
            self.pos += 1
            self._expect_end()
            return
        while True:
            index += 1
            line = self._line()
            yield index, line, self._decode(index, line)
            c = self._peek()
            if c == ",":
                self.pos += 1
                if self._peek() == "]":  # a trailing comma: harmless, accept it
                    c = "]"
                else:
                    continue
            if c == "]":
                self.pos += 1
                self._expect_end()
                return
            if c == "":
                raise DataError(f"the JSON list ends after element {index} without its closing ']' (truncated?)", path=self.path)
            raise DataError(
                f"invalid JSON after element {index} (line {self._line()}): expected ',' or ']', found {c!r}",
                path=self.path, row=index,
            )

    def _decode(self, index: int, line: int) -> object:
        size = _CHUNK
        while True:
            try:
                value, end = self.decoder.raw_decode(self.buf, self.pos)
            except json.JSONDecodeError as e:
                # Maybe the element is just cut by the buffer: read more (growing, so a huge
                # element costs O(n log n), not O(n^2)) and only give up at the end of the file.
                if self._more(size):
                    size *= 2
                    continue
                where = self.line_no + self.buf.count("\n", self.line_pos, e.pos) + 1
                raise DataError(f"invalid JSON in element {index} (line {where}): {e.msg}", path=self.path, row=index) from None
            except (ValueError, RecursionError) as e:  # e.g. an integer with thousands of digits
                raise DataError(f"invalid JSON in element {index} (line {line}): {e}", path=self.path, row=index) from None
            if end == len(self.buf) and self._more(size):
                continue  # a bare number could continue in the next chunk: decode again
            self.pos = end
            return value

    def _expect_end(self) -> None:
        c = self._peek()
        if c:
            raise DataError(f"unexpected text after the JSON list (line {self._line()}): {c!r}", path=self.path)

    @staticmethod
    def _not_a_list(first: str) -> str:
        if first == "{":
            return (
                "expected a JSON list of records ([{...}, ...]) but the file holds a JSON object; "
                "if it has one record per line, name it .jsonl or pass --format jsonl"
            )
        if first == "":
            return "expected a JSON list of records, but the file holds only whitespace"
        return f"expected a JSON list of records ([{{...}}, ...]), but the file starts with {first!r}"
