"""JSON Lines in rekit's own schema: one `Record.to_dict()` per line, end-exclusive offsets.

Labels are taken verbatim (a string, or null for unlabeled): unlike the community formats,
no placeholder such as 100 or "blind" is special here.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator

from rekit.data.formats.fields import BadRow, Context, RawRow, RowProblem
from rekit.data.formats.objects import ObjectRows, json_type
from rekit.data.literal import parse_json_number

_DECODER = json.JSONDecoder(parse_int=parse_json_number)  # a 5,000-digit number: a bad row, not a crash


def rekit_label(value: object) -> tuple[str | None, str | None]:
    if type(value) is str:
        return value, None
    if value is None:
        return None, "label null"
    raise RowProblem(f"label is {json_type(value)} {value!r}, expected a string or null")


def read_rows(lines: Iterable[str], ctx: Context) -> Iterator[RawRow | BadRow]:
    builder = ObjectRows(ctx, rekit_label)
    row = 0
    for line_no, line in enumerate(lines, 1):
        if not line or line.isspace():
            continue
        row += 1
        where = line_no if line_no != row else None
        try:
            value = _DECODER.decode(line)  # surrounding whitespace, \r\n included, is fine for JSON
        except json.JSONDecodeError as e:
            yield BadRow(row, None, f"invalid JSON: {e.msg} (column {e.colno})", where)
            continue
        except (ValueError, RecursionError) as e:
            yield BadRow(row, None, f"invalid JSON: {e}", where)
            continue
        try:
            yield builder.build(value, row, where)
        except RowProblem as e:
            rid = value.get("id") if isinstance(value, dict) else None
            yield BadRow(row, None if rid is None else str(rid), str(e), where)
