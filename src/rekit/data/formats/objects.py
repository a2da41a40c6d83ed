"""One JSON object → one raw row; shared by the KLUE JSON and JSON Lines readers."""

from __future__ import annotations

from collections.abc import Callable

from rekit.data.formats.fields import (
    ENTITY_ALIASES,
    FIELD_ALIASES,
    REQUIRED_FIELDS,
    Context,
    KeyResolver,
    RawEntity,
    RawRow,
    RowProblem,
    entity_from_mapping,
)
from rekit.data.literal import HugeNumber, LiteralError, parse_dict_literal

LabelFn = Callable[[object], "tuple[str | None, str | None]"]

_JSON_TYPES = {dict: "an object", list: "a list", str: "a string", int: "a number", float: "a number",
               bool: "a boolean", type(None): "null", HugeNumber: "a number"}


def json_type(value: object) -> str:
    return _JSON_TYPES.get(type(value), type(value).__name__)


class ObjectRows:
    """Builds `RawRow`s from decoded JSON objects, resolving key names once per key layout."""

    def __init__(self, ctx: Context, label_fn: LabelFn):
        self.ctx = ctx
        self.label_fn = label_fn
        self.keys = KeyResolver(FIELD_ALIASES, ctx.columns, self._note_layout)
        self.entity_keys = KeyResolver(ENTITY_ALIASES, ctx.entity_keys)

    def build(self, obj: object, row: int, line: int | None) -> RawRow:
        if type(obj) is not dict:
            raise RowProblem(f"is {json_type(obj)}, not a JSON object")
        names = self.keys.resolve(obj)
        for need in REQUIRED_FIELDS:
            if names[need] is None:
                raise RowProblem(f"has no {need} key (looked for {self.keys.looked_for(need)})")
        id_key, label_key, source_key = names["id"], names["label"], names["source"]
        rid = obj[id_key] if id_key is not None else str(row - 1)
        if type(rid) is not str:
            if not isinstance(rid, int) or isinstance(rid, bool):
                raise RowProblem(f"id is {rid!r}, expected a non-empty string or an integer")
            rid = str(rid)
        if not rid or rid.isspace():
            raise RowProblem("empty id")
        sentence = obj[names["sentence"]]
        if type(sentence) is not str:
            raise RowProblem(f"sentence is {json_type(sentence)}, not a string")
        if not sentence or sentence.isspace():
            raise RowProblem("empty sentence")
        subject = self._entity(obj[names["subject"]], "subject")
        obj_entity = self._entity(obj[names["object"]], "object")
        label: str | None
        unlabeled: str | None
        if label_key is None:
            label, unlabeled = None, "no label key"
        else:
            label, unlabeled = self.label_fn(obj[label_key])
        source = obj[source_key] if source_key is not None else None
        if source is not None and type(source) is not str:
            source = str(source)
        return RawRow(row, rid, sentence, subject, obj_entity, label, source or None, unlabeled, line)

    def _entity(self, value: object, which: str) -> RawEntity:
        if isinstance(value, str):
            # Some exports keep the CSV habit of a dict literal inside a string.
            try:
                value = parse_dict_literal(value)
            except LiteralError as e:
                raise RowProblem(f"{which} entity is a string that is not a valid entity dict: {e}") from None
        if not isinstance(value, dict):
            raise RowProblem(f"{which} entity is {json_type(value)}, not an object")
        return entity_from_mapping(value, self.entity_keys, which)

    def _note_layout(self, keys: tuple[str, ...], names: dict[str, str | None]) -> None:
        used = {n for n in names.values() if n is not None}
        for key in keys:
            if key not in used:
                self.ctx.note(f"ignored key {key!r}")
        if names["id"] is None:
            self.ctx.note(f"no id key (looked for {self.keys.looked_for('id')}): ids are row numbers from 0")
        if names["label"] is None:
            self.ctx.note(f"no label key (looked for {self.keys.looked_for('label')}): records are unlabeled")
