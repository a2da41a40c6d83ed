"""The one record type every reader produces and every later stage consumes.

Offsets are Python-style: `sentence[start:end] == text` (end exclusive), whatever the
convention of the file they came from. Readers convert on the way in.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class Entity:
    text: str
    start: int  # first character, inclusive
    end: int  # one past the last character (exclusive)
    type: str = "UNK"

    def span_ok(self, sentence: str) -> bool:
        return 0 <= self.start < self.end <= len(sentence) and sentence[self.start : self.end] == self.text


@dataclass(frozen=True)
class Record:
    id: str
    sentence: str
    subject: Entity
    object: Entity
    label: str | None = None  # None: unlabeled (test data)
    source: str | None = None

    def to_dict(self) -> dict:
        """rekit's own JSON Lines schema (see README "Data formats")."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> Record:
        return cls(
            id=str(d["id"]),
            sentence=d["sentence"],
            subject=Entity(**d["subject"]),
            object=Entity(**d["object"]),
            label=d.get("label"),
            source=d.get("source"),
        )
