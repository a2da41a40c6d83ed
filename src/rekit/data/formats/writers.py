"""Writing records: rekit's JSON Lines schema and the community CSV layout, atomically."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable
from pathlib import Path

from rekit.data.schema import Entity, Record
from rekit.errors import DataError
from rekit.io import atomic_path

CSV_HEADER = ("id", "sentence", "subject_entity", "object_entity", "label", "source")
UNLABELED_CSV = "100"  # what community test files hold in place of a label


def write_jsonl(records: Iterable[Record], path: str | Path) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        for rec in records:
            d = rec.to_dict()
            try:
                line = json.dumps(d, ensure_ascii=False).encode("utf-8")
            except UnicodeEncodeError:
                # A lone surrogate (possible from a JSON "\ud800" escape) has no UTF-8 form;
                # JSON's \u escapes still carry it losslessly.
                line = json.dumps(d, ensure_ascii=True).encode("ascii")
            f.write(line + b"\n")


def _entity_cell(e: Entity) -> str:
    # repr() of a dict of str/int is exactly the community's cell format, and it escapes
    # quotes and control characters in a way `rekit.data.literal` reads back.
    return repr({"word": e.text, "start_idx": e.start, "end_idx": e.end - 1, "type": e.type})


def write_csv(records: Iterable[Record], path: str | Path) -> None:
    """The community layout: inclusive end offsets, dict-literal entity cells, 100 = unlabeled."""
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8", newline="") as f:
        # LF line ends like pandas; but then csv does not quote a field holding a bare '\r',
        # which a reader would take for a line end, so such rows are written fully quoted.
        plain = csv.writer(f, lineterminator="\n")
        quoted = csv.writer(f, lineterminator="\n", quoting=csv.QUOTE_ALL)
        plain.writerow(CSV_HEADER)
        for rec in records:
            cells = [
                rec.id, rec.sentence, _entity_cell(rec.subject), _entity_cell(rec.object),
                UNLABELED_CSV if rec.label is None else rec.label, rec.source or "",
            ]
            writer = quoted if any("\r" in c for c in cells) else plain
            try:
                writer.writerow(cells)
            except UnicodeEncodeError:
                raise DataError(
                    f"record {rec.id!r} has text with no UTF-8 form (a lone surrogate); "
                    "write it with write_jsonl instead",
                    path=str(path),
                ) from None
