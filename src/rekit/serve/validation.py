"""Request JSON -> `Record`s, with the readers' rules, and errors that name the item and field.

Offsets follow rekit's record schema: `sentence[start:end] == text`, `end` exclusive (Python
slicing), counted in characters (Unicode code points), not bytes. Unlike the file readers nothing
is repaired: a request is right or it is refused.
"""

from __future__ import annotations

from dataclasses import dataclass

from rekit.data.formats.objects import json_type
from rekit.data.schema import Entity, Record

MAX_ERRORS = 20  # problems listed in one response; the count says how many there were


@dataclass(frozen=True)
class Limits:
    max_items: int = 256  # examples in one request
    max_body_bytes: int = 1 << 20  # request body
    max_sentence_chars: int = 2000  # characters in one sentence


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a request. `item` is the 0-based index in the list (None: the whole body)."""

    item: int | None
    field: str
    message: str
    kind: str  # for the error counter: missing_key, wrong_type, span, sentence_too_long, ...

    def to_dict(self) -> dict:
        return {"item": self.item, "field": self.field, "message": self.message}


class RequestProblems(Exception):
    def __init__(self, status: int, problems: list[Problem]):
        self.status, self.problems = status, problems
        super().__init__(problems[0].message if problems else "bad request")

    def body(self) -> dict:
        first = self.problems[0]
        where = "" if first.item is None else f"item {first.item}: "
        return {"error": f"{where}{first.message}", "count": len(self.problems),
                "problems": [p.to_dict() for p in self.problems[:MAX_ERRORS]]}


class _Bad(Exception):
    def __init__(self, field: str, message: str, kind: str):
        self.field, self.message, self.kind = field, message, kind


def parse_examples(data: object, limits: Limits) -> list[Record]:
    """The request body (already JSON-decoded) -> one Record per item, or RequestProblems.

    The body is a list of examples, or {"examples": [...]}. Every item is checked; all problems
    are reported (up to MAX_ERRORS), not only the first."""
    if isinstance(data, dict) and "examples" in data:
        data = data["examples"]
    if type(data) is not list:
        raise RequestProblems(422, [Problem(None, "body", f"the body is {json_type(data)}; expected a list of "
                                            "examples (or {\"examples\": [...]})", "wrong_type")])
    if not data:
        raise RequestProblems(422, [Problem(None, "body", "the list of examples is empty", "empty")])
    if len(data) > limits.max_items:
        raise RequestProblems(413, [Problem(None, "body", f"{len(data)} examples in one request; the limit is "
                                            f"{limits.max_items} (--max-items)", "too_many_items")])
    records, problems = [], []
    for i, item in enumerate(data):
        try:
            records.append(_record(item, i, limits))
        except _Bad as e:
            problems.append(Problem(i, e.field, f"{e.field}: {e.message}", e.kind))
    if problems:
        raise RequestProblems(422, problems)
    return records


def _record(item: object, index: int, limits: Limits) -> Record:
    if type(item) is not dict:
        raise _Bad("item", f"is {json_type(item)}, not an object", "wrong_type")
    rid = item.get("id", str(index))
    if type(rid) is int:
        rid = str(rid)
    if type(rid) is not str or not rid.strip():
        raise _Bad("id", f"is {_show(rid)}; expected a non-empty string or an integer", "wrong_type")
    sentence = _get(item, "sentence", "sentence", str)
    if not sentence.strip():
        raise _Bad("sentence", "is empty", "empty")
    if len(sentence) > limits.max_sentence_chars:
        raise _Bad("sentence", f"has {len(sentence):,} characters; the limit is {limits.max_sentence_chars:,} "
                   "(--max-sentence-chars)", "sentence_too_long")
    subject = _entity(_get(item, "subject", "subject", dict), "subject", sentence)
    obj = _entity(_get(item, "object", "object", dict), "object", sentence)
    return Record(id=rid, sentence=sentence, subject=subject, object=obj)


def _entity(d: dict, which: str, sentence: str) -> Entity:
    text = _get(d, "text", f"{which}.text", str)
    if not text:
        raise _Bad(f"{which}.text", "is empty", "empty")
    start = _get(d, "start", f"{which}.start", int)
    end = _get(d, "end", f"{which}.end", int)
    etype = d.get("type", "UNK")
    if type(etype) is not str or not etype:
        raise _Bad(f"{which}.type", f"is {_show(etype)}; expected a non-empty string", "wrong_type")
    if start < 0 or end <= start or end > len(sentence):
        why = ("is negative" if start < 0 else "ends before it starts" if end <= start
               else f"runs past the end of the sentence ({len(sentence)} characters)")
        raise _Bad(f"{which}.start" if start < 0 else f"{which}.end",
                   f"span {start}..{end} {why} (end is exclusive: sentence[start:end] == text)", "span")
    if sentence[start:end] != text:
        raise _Bad(f"{which}.text", f"{text!r} is not at {start}..{end}: the sentence has {sentence[start:end]!r} "
                   "there (end is exclusive: sentence[start:end] == text)", "span")
    return Entity(text, start, end, etype)


def _get(d: dict, key: str, field: str, typ: type):
    if key not in d:
        raise _Bad(field, "is missing", "missing_key")
    value = d[key]
    if type(value) is not typ:  # `type is`, not isinstance: true is not an offset
        want = {str: "a string", int: "an integer", dict: "an object"}[typ]
        raise _Bad(field, f"is {_show(value)}; expected {want}", "wrong_type")
    return value


def _show(value: object) -> str:
    return json_type(value) if isinstance(value, (dict, list)) else f"{json_type(value)} {value!r}"[:80]
