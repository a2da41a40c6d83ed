"""The older headerless TSV (2021 Korean RE competition):
`id, sentence, e1, e1_start, e1_end, e2, e2_start, e2_end, label`, inclusive end offsets.

e1 is the subject and e2 the object; the files carry no entity types, so both are "UNK".
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Iterator

from rekit.data.formats.fields import (
    BadRow,
    Context,
    RawEntity,
    RawRow,
    RowProblem,
    community_label,
    csv_records,
    to_offset,
)

COLUMNS = ("id", "sentence", "e1", "e1_start", "e1_end", "e2", "e2_start", "e2_end", "label")


def read_rows(lines: Iterable[str], ctx: Context) -> Iterator[RawRow | BadRow]:
    # QUOTE_NONE: these files never quote, and their sentences contain bare '"' characters.
    reader = csv.reader(lines, delimiter="\t", quoting=csv.QUOTE_NONE)
    ctx.note("legacy TSV has no entity types: all entities are typed 'UNK'")
    row, prev_line = 0, 0
    for rec in csv_records(reader, ctx, "TSV"):
        start_line, prev_line = prev_line + 1, reader.line_num
        if not rec or (len(rec) == 1 and not rec[0].strip()):
            continue
        row += 1
        line = start_line if start_line != row else None
        try:
            raw = _build(rec, row)
        except RowProblem as e:
            yield BadRow(row, rec[0] or None, str(e), line)
            continue
        raw.line = line
        yield raw


def _build(rec: list[str], row: int) -> RawRow:
    if len(rec) != len(COLUMNS):
        raise RowProblem(
            f"has {len(rec)} tab-separated fields, expected {len(COLUMNS)} ({', '.join(COLUMNS)})"
        )
    rid, sentence, e1, s1, t1, e2, s2, t2, raw_label = rec
    if not rid or rid.isspace():
        raise RowProblem("empty id")
    if not sentence or sentence.isspace():
        raise RowProblem("empty sentence")
    subject = _entity(e1, s1, t1, "subject", "e1")
    obj = _entity(e2, s2, t2, "object", "e2")
    label, unlabeled = community_label(raw_label)
    return RawRow(row, rid, sentence, subject, obj, label, None, unlabeled)


def _entity(text: str, start: str, end: str, which: str, col: str) -> RawEntity:
    if not text:
        raise RowProblem(f"{which} entity text ({col}) is empty")
    return RawEntity(text, to_offset(start, f"{col}_start", which), to_offset(end, f"{col}_end", which), "UNK")
