"""Entity representations (Zhou & Chen, "An Improved Baseline for Sentence-level Relation
Extraction", 2022), as pure functions over records.

Markers are inserted at the records' character offsets, never found by string search, and the
character position of each start marker is returned so the tokenizer stage can map it to a
token index for the entity head.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from rekit.data.schema import Entity, Record

# Korean words for the KLUE entity types, used by the query first segment.
TYPE_KO = {"PER": "사람", "ORG": "단체", "DAT": "날짜", "LOC": "위치", "POH": "기타", "NOH": "수량"}


@dataclass(frozen=True)
class Marked:
    text: str
    subj_span: tuple[int, int]  # characters of the marked subject, start marker included
    obj_span: tuple[int, int]

    @property
    def subj_char(self) -> int:  # where the head reads the subject: its start marker
        return self.subj_span[0]

    @property
    def obj_char(self) -> int:
        return self.obj_span[0]


def _wrap(entity: Entity, scheme: str, role: str) -> tuple[str, str]:
    """(prefix, suffix) around one entity. role: 'S' subject or 'O' object."""
    t = entity.type
    if scheme == "none":
        return "", ""
    if scheme == "entity_marker":
        n = "1" if role == "S" else "2"
        return f"[E{n}] ", f" [/E{n}]"
    if scheme == "entity_marker_punct":
        p = "@" if role == "S" else "#"
        return f"{p} ", f" {p}"
    if scheme == "typed_entity_marker":
        return f"<{role}:{t}> ", f" </{role}:{t}>"
    if scheme == "typed_entity_marker_punct":
        p, q = ("@", "*") if role == "S" else ("#", "^")
        return f"{p} {q} {t} {q} ", f" {p}"
    raise ValueError(f"unknown marker scheme {scheme!r}")


def mark(record: Record, scheme: str) -> Marked:
    """Insert the scheme's markers around subject and object at their character offsets.

    The four markers are insertions at offsets, so nested or overlapping entities work too:
    at one offset, closing markers go before opening ones, and the longer entity opens first.
    """
    inserts = []  # (offset, order, role, kind, text)
    for entity, role in ((record.subject, "S"), (record.object, "O")):
        prefix, suffix = _wrap(entity, scheme, role)
        inserts.append((entity.start, 1, -entity.end, role, "open", prefix))
        inserts.append((entity.end, 0, -entity.start, role, "close", suffix))
    inserts.sort(key=lambda x: x[:3])
    out: list[str] = []
    length, cursor = 0, 0
    begin: dict[str, int] = {}
    spans: dict[str, tuple[int, int]] = {}
    for offset, _, _, role, kind, text in inserts:
        chunk = record.sentence[cursor:offset]
        out.append(chunk)
        length += len(chunk)
        cursor = offset
        if kind == "open":
            begin[role] = length
        out.append(text)
        length += len(text)
        if kind == "close":
            spans[role] = (begin[role], length)
    out.append(record.sentence[cursor:])
    return Marked("".join(out), spans["S"], spans["O"])


def new_tokens(scheme: str, types: Sequence[str] = ()) -> list[str]:
    """Tokens a tokenizer must learn for a scheme (punctuation schemes reuse existing tokens)."""
    if scheme == "entity_marker":
        return ["[E1]", "[/E1]", "[E2]", "[/E2]"]
    if scheme == "typed_entity_marker":
        return [f"{b}{r}:{t}>" for t in sorted(set(types)) for r in "SO" for b in ("<", "</")]
    return []


def _has_final_consonant(word: str) -> bool:
    """True if the last Hangul syllable ends in a consonant (batchim): picks 과 over 와."""
    if not word:
        return False
    code = ord(word[-1]) - 0xAC00
    if 0 <= code <= 11171:
        return code % 28 != 0
    return word[-1].isdigit() and word[-1] in "0136789"  # 영, 일, 삼, 육, 칠, 팔, 구 end in a consonant


def first_segment(record: Record, mode: str, scheme: str, sep: str) -> str | None:
    """The first input segment, or None for a single-segment input."""
    if mode == "auto":
        mode = "entities" if scheme == "none" else "none"
    if mode == "none":
        return None
    s, o = record.subject, record.object
    if mode == "entities":  # the community baseline: "subj[SEP]obj"
        return f"{s.text}{sep}{o.text}"
    if mode == "query":
        wa = "과" if _has_final_consonant(s.text) else "와"
        st, ot = TYPE_KO.get(s.type, s.type), TYPE_KO.get(o.type, o.type)
        wa_t = "과" if _has_final_consonant(st) else "와"
        return f"{s.text}{wa} {o.text}의 관계는 {st}{wa_t} {ot}의 관계이다."
    raise ValueError(f"unknown first segment mode {mode!r}")
