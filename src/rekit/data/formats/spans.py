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


def file_offsets(ent: Entity, inclusive: bool) -> tuple[int, int]:
    """`ent`'s (start, end) in the file's convention."""
    return ent.start, ent.end - 1 if inclusive else ent.end


def file_span(ent: Entity, inclusive: bool) -> str:
    """`ent`'s span written in the file's convention, for messages."""
    return "{}..{}".format(*file_offsets(ent, inclusive))


def occurrences(text: str, sentence: str, limit: int = 1000) -> list[int]:
    """Start positions of `text` in `sentence` (overlapping ones too), at most `limit`."""
    found: list[int] = []
    i = sentence.find(text)
    while i != -1 and len(found) < limit:
        found.append(i)
        i = sentence.find(text, i + 1)
    return found


def unambiguous_repair(e: RawEntity, sentence: str, inclusive: bool) -> tuple[Entity | None, str]:
    """(the entity where its text must be meant to be, why) or (None, why it is not certain).

    Certain means one of, in this order: the text is at the given start and only the end is one
    off (an inclusive end in an exclusive file or the reverse); the text sits one character
    before or after the given start, and not both (an off-by-one shift); the text occurs
    exactly once in the sentence.
    """
    found = occurrences(e.text, sentence)
    if not found:
        return None, "the entity text does not occur in the sentence"
    n, end = len(e.text), e.end + 1 if inclusive else e.end
    if e.start in found and abs(end - (e.start + n)) == 1:
        if e.end == e.start + n - (0 if inclusive else 1):
            why = "an exclusive end in an inclusive file" if inclusive else "an inclusive end in an exclusive file"
        else:
            why = "the end is one character off"
        return Entity(e.text, e.start, e.start + n, e.type), why
    near = [p for p in (e.start - 1, e.start + 1) if p in found]
    if len(near) == 1:
        return Entity(e.text, near[0], near[0] + n, e.type), "span shifted by one character"
    if len(found) == 1:
        return Entity(e.text, found[0], found[0] + n, e.type), "the entity text occurs once in the sentence"
    return None, f"the entity text occurs {len(found):,} times, none at or next to the given start"


def clamp(e: RawEntity, sentence: str, inclusive: bool) -> Entity:
    """The given offsets forced into the sentence (at least one character); the text becomes what
    is there. For prediction only, where a row must be predicted even when its span is wrong."""
    size = len(sentence)
    start = min(max(e.start, 0), size - 1)
    end = min(max(e.end + 1 if inclusive else e.end, start + 1), size)
    return Entity(sentence[start:end], start, end, e.type)
