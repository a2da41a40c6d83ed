"""What every format reader produces (raw rows), and the field-level rules they share.

Format modules only split a file into rows and fields; offsets stay in the file's own
convention here (`RawEntity.end` may be inclusive). The pipeline in `rekit.data.readers`
decides the convention, checks spans and builds `Record`s.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field

from rekit.errors import DataError

FIELDS = ("id", "sentence", "subject", "object", "label", "source")
ENTITY_FIELDS = ("text", "start", "end", "type")

# Names seen in the wild for each field, most common first. Matching is case-insensitive.
FIELD_ALIASES: dict[str, tuple[str, ...]] = {
    "id": ("id", "guid", "uid", "example_id", "sample_id"),
    "sentence": ("sentence", "text", "sent", "context"),
    "subject": ("subject_entity", "subject", "subj", "subj_entity", "sub_entity", "head", "e1"),
    "object": ("object_entity", "object", "obj", "obj_entity", "tail", "e2"),
    "label": ("label", "relation", "relation_label", "class", "target", "labels"),
    "source": ("source",),
}
ENTITY_ALIASES: dict[str, tuple[str, ...]] = {
    "text": ("word", "text", "name", "entity"),
    "start": ("start_idx", "start", "begin", "s", "start_index", "start_char"),
    "end": ("end_idx", "end", "e", "end_index", "end_char"),
    "type": ("type", "entity_type", "ner", "label"),
}
REQUIRED_FIELDS = ("sentence", "subject", "object")
REQUIRED_ENTITY = ("text", "start", "end")

# Placeholders that mean "no label" in community files (test sets use 100 or "blind").
_UNLABELED = {"": "empty label", "nan": "label 'nan'", "100": "label 100", "blind": "label 'blind'"}
_INT = re.compile(r"\s*[-+]?\d{1,18}(?:\.0*)?\s*")
_MAX_OFFSET = 10**18  # no sentence is that long; bigger offsets are refused, not carried into messages


@dataclass(slots=True)
class RawEntity:
    text: str
    start: int
    end: int  # as written in the file: inclusive or exclusive is decided per file later
    type: str


@dataclass(slots=True)
class RawRow:
    row: int  # 1-based data record number (header and blank lines not counted)
    id: str
    sentence: str
    subject: RawEntity
    object: RawEntity
    label: str | None
    source: str | None
    unlabeled: str | None = None  # why `label` is None, for the report ("label 100", ...)
    line: int | None = None  # first physical line, set when it is not what `row` suggests


@dataclass(slots=True)
class BadRow:
    row: int
    id: str | None
    problem: str
    line: int | None = None


class RowProblem(Exception):
    """Raised inside a format reader for one malformed row; becomes a `BadRow`."""


@dataclass
class Context:
    """What a format reader may consult and tell: the options and the report's notes."""

    path: str
    columns: dict[str, str] | None = None
    entity_keys: dict[str, str] | None = None
    notes: list[str] = field(default_factory=list)

    def note(self, text: str) -> None:
        if text not in self.notes:
            self.notes.append(text)


def csv_records(reader, ctx: Context, kind: str = "CSV") -> Iterator[list[str]]:
    """The records of a csv.reader, with csv's own errors turned into a `DataError` naming the line."""
    it = iter(reader)
    while True:
        try:
            rec = next(it)
        except StopIteration:
            return
        except csv.Error as e:
            raise DataError(f"line {reader.line_num}: malformed {kind} ({e})", path=ctx.path) from None
        yield rec


class KeyResolver:
    """Maps the keys of a mapping (or a CSV header) to rekit's field names.

    Explicit names (from the options) win; otherwise the first alias present. Results are
    cached per key layout because a file almost always has one layout for all its rows.
    """

    def __init__(
        self,
        aliases: dict[str, tuple[str, ...]],
        explicit: Mapping[str, str] | None,
        on_new_layout: Callable[[tuple[str, ...], dict[str, str | None]], None] | None = None,
    ):
        self.aliases = aliases
        self.explicit = dict(explicit or {})
        self.on_new_layout = on_new_layout
        self._cache: dict[tuple[str, ...], dict[str, str | None]] = {}

    def resolve(self, keys: Iterable[str]) -> dict[str, str | None]:
        layout = tuple(keys)
        found = self._cache.get(layout)
        if found is None:
            if len(self._cache) > 1000:  # pathological files: keep the cache bounded
                self._cache.clear()
            found = self._cache[layout] = self._resolve(layout)
            if self.on_new_layout is not None:
                self.on_new_layout(layout, found)
        return found

    def _resolve(self, keys: tuple[str, ...]) -> dict[str, str | None]:
        present = set(keys)
        folded: dict[str, str] = {}
        for k in keys:
            folded.setdefault(str(k).strip().lower(), k)
        out: dict[str, str | None] = {}
        taken: set[str] = set()
        for name in self.aliases:
            if name in self.explicit:
                want = self.explicit[name]
                out[name] = want if want in present else folded.get(want.strip().lower())
            else:
                out[name] = None
                for alias in self.aliases[name]:
                    hit = alias if alias in present else folded.get(alias)
                    if hit is not None and hit not in taken:
                        out[name] = hit
                        break
            if out[name] is not None:
                taken.add(out[name])  # type: ignore[arg-type]
        return out

    def looked_for(self, name: str) -> str:
        if name in self.explicit:
            return repr(self.explicit[name])
        return "/".join(self.aliases[name])


def to_offset(value: object, key: str, which: str) -> int:
    """An integer offset from an int, an integral float or a numeric string ("24")."""
    offset: int | None = None
    if isinstance(value, bool):
        pass  # bool is an int subclass, but True is not an offset
    elif isinstance(value, int):
        offset = value
    elif isinstance(value, float) and value.is_integer():
        offset = int(value)  # pandas writes 24.0 when a column once held a NaN
    elif isinstance(value, str) and value.isascii() and value.isdigit() and len(value) <= 18:
        return int(value)  # the common case in TSV files and string-offset CSVs
    elif isinstance(value, str) and _INT.fullmatch(value):
        offset = int(float(value)) if "." in value else int(value)
    if offset is None:
        raise RowProblem(f"{which} {key} is {_short(value)}, not an integer offset")
    if not -_MAX_OFFSET < offset < _MAX_OFFSET:
        raise RowProblem(f"{which} {key} has {len(str(abs(offset))):,} digits, not an offset")
    return offset


def entity_from_mapping(d: Mapping[str, object], keys: KeyResolver, which: str) -> RawEntity:
    """A `RawEntity` from an entity dict, whatever its key names (word/text/..., start_idx/...)."""
    names = keys.resolve(d)
    tkey, skey, ekey, ykey = names["text"], names["start"], names["end"], names["type"]
    if tkey is None or skey is None or ekey is None:
        need = next(f for f in REQUIRED_ENTITY if names[f] is None)
        raise RowProblem(
            f"{which} entity has no {need} key (looked for {keys.looked_for(need)}; "
            f"it has {', '.join(map(repr, d)) or 'no keys'}); map keys with --entity-keys"
        )
    text = d[tkey]
    if type(text) is not str:
        if isinstance(text, int) and not isinstance(text, bool):
            text = str(text)  # an unquoted number such as 1969 in a hand-made file
        else:
            raise RowProblem(f"{which} entity text is {_short(text)}, not a string")
    if not text:
        raise RowProblem(f"{which} entity text is empty")
    start, end = d[skey], d[ekey]
    if type(start) is not int or not -_MAX_OFFSET < start < _MAX_OFFSET:
        start = to_offset(start, skey, which)
    if type(end) is not int or not -_MAX_OFFSET < end < _MAX_OFFSET:
        end = to_offset(end, ekey, which)
    etype = d.get(ykey) if ykey is not None else None
    return RawEntity(text, start, end, etype if type(etype) is str and etype else _entity_type(etype))  # type: ignore[arg-type]


def _entity_type(value: object) -> str:
    if value is None or value == "":
        return "UNK"
    return value if isinstance(value, str) else str(value)


_LABEL_CACHE: dict[str, tuple[str | None, str | None]] = {}  # a file has few distinct labels


def community_label(value: object) -> tuple[str | None, str | None]:
    """(label, why-unlabeled) for CSV/TSV/KLUE JSON cells, where 100/'blind'/empty mean none."""
    if type(value) is str:
        hit = _LABEL_CACHE.get(value)
        if hit is None:
            why = _UNLABELED.get(value.strip().lower())
            hit = (None, why) if why is not None else (value, None)
            if len(_LABEL_CACHE) < 10_000:
                _LABEL_CACHE[value] = hit
        return hit
    if value is None:
        return None, "label null"
    if isinstance(value, float) and value != value:
        return None, "label NaN"
    text = value if isinstance(value, str) else str(value)
    why = _UNLABELED.get(text.strip().lower())
    if why is not None:
        return None, why
    return text, None


def _short(value: object, limit: int = 40) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def shorten(text: str, limit: int = 60) -> str:
    """`text` quoted for a message, cut in the middle of very long values."""
    if len(text) > limit:
        text = text[: limit // 2] + "…" + text[-limit // 2 :]
    return repr(text)
