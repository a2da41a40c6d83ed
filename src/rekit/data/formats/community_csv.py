"""The community CSV layout: `id,sentence,subject_entity,object_entity,label,source` with a header.

Entity cells are dict literals (`{'word': ..., 'start_idx': ..., 'end_idx': ..., 'type': ...}`),
parsed by `rekit.data.literal` (never evaluated). Column names vary; see `FIELD_ALIASES`.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterable, Iterator

from rekit.data.formats.fields import (
    ENTITY_ALIASES,
    FIELD_ALIASES,
    REQUIRED_FIELDS,
    BadRow,
    Context,
    KeyResolver,
    RawEntity,
    RawRow,
    RowProblem,
    community_label,
    csv_records,
    entity_from_mapping,
)
from rekit.data.literal import MAX_CELL_CHARS, LiteralError, parse_dict_literal
from rekit.errors import DataError

# The csv module refuses fields over 128 KiB by default; a long sentence is legitimate data.
# The limit is process-wide, so only ever raise it, and keep a bound against runaway fields
# (an unclosed quote swallowing the rest of a file).
FIELD_LIMIT = 64 * 1024 * 1024
if csv.field_size_limit() < FIELD_LIMIT:
    csv.field_size_limit(FIELD_LIMIT)


def read_rows(lines: Iterable[str], ctx: Context, delimiter: str = ",") -> Iterator[RawRow | BadRow]:
    reader = csv.reader(lines, delimiter=delimiter)
    records = csv_records(reader, ctx)
    header = next((rec for rec in records if rec), None)
    if header is None:
        raise DataError("no header row (the file holds only blank lines)", path=ctx.path)
    header_line = reader.line_num
    header = [name.strip().lstrip("\ufeff").strip() for name in header]
    cols = _map_header(header, ctx)
    ekeys = KeyResolver(ENTITY_ALIASES, ctx.entity_keys)
    row, prev_line = 0, reader.line_num
    for rec in records:
        start_line, prev_line = prev_line + 1, reader.line_num
        if not rec:  # a blank line: not a row
            continue
        row += 1
        line = start_line if start_line != row + header_line else None
        rid = rec[cols["id"]] if cols["id"] is not None and cols["id"] < len(rec) else None
        try:
            raw = _build(rec, row, header, cols, ekeys)
        except RowProblem as e:
            problem = str(e)
            if len(rec) != len(header) and reader.line_num > start_line:
                problem += f"; the row runs from line {start_line} to {reader.line_num}: an unclosed quote?"
            yield BadRow(row, rid, problem, line)
            continue
        raw.line = line
        yield raw


def _map_header(header: list[str], ctx: Context) -> dict[str, int | None]:
    resolver = KeyResolver(FIELD_ALIASES, ctx.columns)
    names = resolver.resolve(header)
    missing = [f for f in REQUIRED_FIELDS if names[f] is None]
    if missing:
        wanted = "; ".join(f"{f} (looked for {resolver.looked_for(f)})" for f in missing)
        raise DataError(
            f"missing column for {wanted}; the header has: {', '.join(map(repr, header))}. "
            "Map columns with --columns, e.g. --columns sentence=text",
            path=ctx.path,
        )
    cols = {f: (header.index(n) if n is not None else None) for f, n in names.items()}
    used = {i for i in cols.values() if i is not None}
    for i, name in enumerate(header):
        if i in used:
            continue
        if name == "" or name.startswith("Unnamed:"):
            ctx.note(f"ignored extra column {name!r} (an index column, as pandas writes)")
        elif name in header[:i]:
            ctx.note(f"ignored repeated column {name!r} (the first one is used)")
        else:
            ctx.note(f"ignored extra column {name!r}")
    if cols["id"] is None:
        ctx.note(f"no id column (looked for {resolver.looked_for('id')}): ids are row numbers from 0")
    if cols["label"] is None:
        ctx.note(f"no label column (looked for {resolver.looked_for('label')}): all records are unlabeled")
    return cols


def _build(rec: list[str], row: int, header: list[str], cols: dict[str, int | None], ekeys: KeyResolver) -> RawRow:
    width = len(header)
    if len(rec) != width:
        if len(rec) > width and not any(cell.strip() for cell in rec[width:]):
            rec = rec[:width]  # trailing empty fields (a trailing comma) carry nothing
        else:
            raise RowProblem(f"has {len(rec)} fields, the header has {width}")
    rid = rec[cols["id"]] if cols["id"] is not None else str(row - 1)
    if not rid or rid.isspace():
        raise RowProblem("empty id")
    sentence = rec[cols["sentence"]]  # type: ignore[index]
    if not sentence or sentence.isspace():
        raise RowProblem("empty sentence")
    subject = _entity(rec, cols["subject"], header, ekeys, "subject")  # type: ignore[arg-type]
    obj = _entity(rec, cols["object"], header, ekeys, "object")  # type: ignore[arg-type]
    label: str | None
    unlabeled: str | None
    if cols["label"] is None:
        label, unlabeled = None, "no label column"
    else:
        label, unlabeled = community_label(rec[cols["label"]])
    source = rec[cols["source"]] if cols["source"] is not None else ""
    return RawRow(row, rid, sentence, subject, obj, label, source or None, unlabeled)


# The exact cell pandas writes for KLUE-RE (no quotes or backslashes inside the strings):
# matched in one step, it skips the general parser for nearly every real row.
_CANONICAL = re.compile(
    r"\{'word': '([^'\\]+)', 'start_idx': ([0-9]{1,18}), 'end_idx': ([0-9]{1,18}), 'type': '([^'\\]*)'\}"
)


def _entity(rec: list[str], col: int, header: list[str], ekeys: KeyResolver, which: str) -> RawEntity:
    cell = rec[col]
    if not ekeys.explicit and len(cell) <= MAX_CELL_CHARS:
        m = _CANONICAL.fullmatch(cell)
        if m is not None:
            text, start, end, etype = m.groups()
            return RawEntity(text, int(start), int(end), etype or "UNK")
    try:
        d = parse_dict_literal(cell)
    except LiteralError as e:
        raise RowProblem(f"{header[col]} cell is not a valid entity dict: {e}") from None
    return entity_from_mapping(d, ekeys, which)
