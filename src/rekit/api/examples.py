"""Examples given in Python -> `Record`s, checked with the readers' rules and messages.

Accepted (see README "Python API"):
- plain dicts `{"sentence", "subject": {"text", "start", "end", "type"}, "object": {...}}`, with
  optional "id" and "label"; offsets are end-exclusive (`sentence[start:end] == text`), as in
  rekit's JSON Lines. Key aliases work as in files ("word"/"start_idx"/"end_idx", "subject_entity").
- rekit `Record`s;
- a pandas DataFrame in the community CSV layout (`sentence`, `subject_entity`, `object_entity`,
  optional `id` and `label`; entity cells dicts or dict literals; end offsets INCLUSIVE, as in
  that layout).

A bad example raises `DataError("examples[i]: ...")` with the problem worded as the readers word
it (span outside the sentence, missing key, entity text not at its span), and an entity type
the model never saw in training is refused when the model knows its types. Torch-free.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from rekit.data.formats.fields import Context, RawRow, RowProblem, community_label
from rekit.data.formats.jsonl import rekit_label
from rekit.data.formats.objects import ObjectRows
from rekit.data.formats.spans import describe_mismatch, to_entity
from rekit.data.schema import Entity, Record
from rekit.errors import DataError

WHERE = "examples"


def _is_dataframe(obj: object) -> bool:
    return type(obj).__name__ == "DataFrame" and hasattr(obj, "to_dict")


def to_records(examples, entity_types: Sequence[str] | None = None) -> list[Record]:
    """Dicts, Records or a community-layout DataFrame -> validated Records (see the module doc)."""
    if isinstance(examples, (Record, dict)):
        raise DataError("pass a list of examples, not a single one (wrap it in [...])", path=WHERE)
    if _is_dataframe(examples):
        rows, inclusive, label_fn = examples.to_dict("records"), True, community_label
    elif isinstance(examples, Iterable) and not isinstance(examples, (str, bytes)):
        rows, inclusive, label_fn = list(examples), False, rekit_label
    else:
        raise DataError(f"expected a list of dicts or Records, or a DataFrame; got {type(examples).__name__}", path=WHERE)
    builder = ObjectRows(Context(WHERE), label_fn)
    known = set(entity_types) if entity_types else None
    out = []
    for i, ex in enumerate(rows):
        rec = _check_record(ex, i) if isinstance(ex, Record) else _from_mapping(builder, ex, i, inclusive)
        if known is not None:
            _check_types(rec, known, i)
        out.append(rec)
    return out


def _where(i: int) -> str:
    return f"{WHERE}[{i}]"


def _from_mapping(builder: ObjectRows, ex: object, i: int, inclusive: bool) -> Record:
    try:
        raw: RawRow = builder.build(ex, i + 1, None)
    except RowProblem as e:
        raise DataError(str(e), path=_where(i)) from None
    ents = []
    for which, raw_ent in (("subject", raw.subject), ("object", raw.object)):
        ent = to_entity(raw_ent, raw.sentence, inclusive)
        if ent is None:
            raise DataError(describe_mismatch(which, raw_ent, raw.sentence, inclusive), path=_where(i))
        ents.append(ent)
    return Record(raw.id, raw.sentence, ents[0], ents[1], raw.label, raw.source)


def _check_record(rec: Record, i: int) -> Record:
    for which, ent in (("subject", rec.subject), ("object", rec.object)):
        if not (isinstance(ent, Entity) and isinstance(rec.sentence, str) and ent.span_ok(rec.sentence)):
            raise DataError(f"{which} span {ent.start}..{ent.end} does not match its text {ent.text!r} "
                            "(Record offsets are end-exclusive)", path=_where(i))
    return rec


def _check_types(rec: Record, known: set[str], i: int) -> None:
    for which, ent in (("subject", rec.subject), ("object", rec.object)):
        if ent.type not in known:
            raise DataError(f"{which} type {ent.type!r} is not an entity type the model was trained on "
                            f"({', '.join(sorted(known))})", path=_where(i))
