"""Entity spans: which end convention a file uses, whether a span matches, and repairs."""

from __future__ import annotations

from rekit.data.formats.fields import RawEntity, RawRow, shorten
from rekit.data.schema import Entity

INCLUSIVE, EXCLUSIVE = "inclusive", "exclusive"


def to_entity(e: RawEntity, sentence: str, inclusive: bool) -> Entity | None:
    """The entity with Python (end-exclusive) offsets, or None if its span does not match."""
    start, end = e.start, e.end + 1 if inclusive else e.end
    # startswith compares in place: no slice is allocated for the (very common) good row.
    if 0 <= start < end <= len(sentence) and end - start == len(e.text) and sentence.startswith(e.text, start):
        return Entity(e.text, start, end, e.type)
    return None


def vote(row: RawRow) -> str | None:
    """The convention under which both of the row's spans match, if exactly one does."""
    inc = to_entity(row.subject, row.sentence, True) and to_entity(row.object, row.sentence, True)
    exc = to_entity(row.subject, row.sentence, False) and to_entity(row.object, row.sentence, False)
    if inc and not exc:
        return INCLUSIVE
    if exc and not inc:
        return EXCLUSIVE
    return None


def describe_mismatch(which: str, e: RawEntity, sentence: str, inclusive: bool) -> str:
    start, end = e.start, e.end + 1 if inclusive else e.end
    span = f"{which} span {e.start}..{e.end}"
    want = f"expected {shorten(e.text)}"
    if start < 0 or e.end < 0:
        return f"{span} has a negative offset, {want}"
    if end <= start:
        return f"{span} ends before it starts, {want}"
    if end > len(sentence):
        return f"{span} runs past the end of the sentence ({len(sentence)} characters), {want}"
    return f"{span} is {shorten(sentence[start:end])}, {want}"


def relocate(e: RawEntity, sentence: str) -> Entity | None:
    """The occurrence of the entity text nearest to its given start (earlier wins a tie)."""
    best = -1
    i = sentence.find(e.text)
    while i != -1:
        if best < 0 or abs(i - e.start) < abs(best - e.start):
            best = i
        if i >= e.start:  # every later occurrence is farther away
            break
        i = sentence.find(e.text, i + 1)
    if best < 0:
        return None
    return Entity(e.text, best, best + len(e.text), e.type)


def file_span(ent: Entity, inclusive: bool) -> str:
    """`ent`'s span written in the file's convention, for messages."""
    return f"{ent.start}..{ent.end - 1 if inclusive else ent.end}"
