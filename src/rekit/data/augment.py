"""Training-time augmentations on records (pure functions; offsets stay exact).

Each returns a new `Record`, or None when it does not apply to that record:
  swap    subject <-> object for a symmetric relation (per:spouse, per:siblings, ...) or an
          inverse pair (per:parents <-> per:children, org:members <-> org:member_of);
  entity  one entity replaced by another entity of the same type seen in training;
  punct   AEDA (Karimi et al., 2021): punctuation marks inserted between words, outside entities.
Random token masking works on token ids during training instead (modeling/masking.py).
"""

from __future__ import annotations

import dataclasses
import random
from collections import defaultdict
from collections.abc import Sequence

from rekit.data.schema import Entity, Record

# no_relation is deliberately absent: (A, B) unrelated says nothing about (B, A).
SYMMETRIC = frozenset({"per:siblings", "per:spouse", "per:colleagues", "per:other_family",
                       "per:alternate_names", "org:alternate_names"})
INVERSE = {"per:parents": "per:children", "per:children": "per:parents",
           "org:members": "org:member_of", "org:member_of": "org:members"}
PUNCT = (".", ",", "!", "?", ";", ":")


def _overlap(a: Entity, b: Entity) -> bool:
    return a.start < b.end and b.start < a.end


def swap(record: Record, labels: Sequence[str] | None = None) -> Record | None:
    """Subject and object exchanged, with the label it implies; None if it implies none we know."""
    if record.label in SYMMETRIC:
        label = record.label
    elif record.label in INVERSE:
        label = INVERSE[record.label]
    else:
        return None
    if labels is not None and label not in labels:
        return None
    return dataclasses.replace(record, id=f"{record.id}~swap", subject=record.object, object=record.subject, label=label)


def _replace_text(record: Record, role: str, new_text: str) -> Record:
    """Put `new_text` where the `role` entity is; the other entity's offsets shift if after it."""
    target, other = (record.subject, record.object) if role == "subject" else (record.object, record.subject)
    s = record.sentence
    sentence = s[: target.start] + new_text + s[target.end :]
    shift = len(new_text) - (target.end - target.start)
    new_target = Entity(new_text, target.start, target.start + len(new_text), target.type)
    if other.start >= target.end:
        other = Entity(other.text, other.start + shift, other.end + shift, other.type)
    subject, obj = (new_target, other) if role == "subject" else (other, new_target)
    return dataclasses.replace(record, sentence=sentence, subject=subject, object=obj)


def entity_pool(records: Sequence[Record]) -> dict[str, list[str]]:
    """Entity type -> distinct entity texts seen with it (subjects and objects)."""
    pool: dict[str, set[str]] = defaultdict(set)
    for r in records:
        for e in (r.subject, r.object):
            pool[e.type].add(e.text)
    return {t: sorted(v) for t, v in pool.items()}


def replace_entity(record: Record, pool: dict[str, list[str]], rng: random.Random) -> Record | None:
    """One entity (subject or object, at random) swapped for another of its type from `pool`."""
    if _overlap(record.subject, record.object):
        return None
    role = rng.choice(("subject", "object"))
    entity = record.subject if role == "subject" else record.object
    choices = [t for t in pool.get(entity.type, ()) if t != entity.text]
    if not choices:
        return None
    out = _replace_text(record, role, rng.choice(choices))
    return dataclasses.replace(out, id=f"{record.id}~entity")


def insert_punct(record: Record, rng: random.Random, ratio: float = 0.3) -> Record | None:
    """AEDA: 1..ratio*words punctuation marks, each inserted before a word outside both entities."""
    s = record.sentence
    ents = (record.subject, record.object)
    # Word starts: the first character and every character after a space, not inside an entity.
    starts = [i for i in range(len(s)) if (i == 0 or s[i - 1] == " ") and s[i] != " "
              and not any(e.start < i < e.end for e in ents)]
    if not starts:
        return None
    k = rng.randint(1, max(1, int(len(starts) * ratio)))
    chosen = sorted(rng.sample(starts, min(k, len(starts))))
    out, cursor = [], 0
    inserted_before = []  # positions in the original text, for shifting offsets
    for pos in chosen:
        out.append(s[cursor:pos])
        out.append(rng.choice(PUNCT) + " ")
        inserted_before.append(pos)
        cursor = pos
    out.append(s[cursor:])

    def move(e: Entity) -> Entity:
        n = 2 * sum(1 for p in inserted_before if p <= e.start)  # each insertion adds 2 characters
        return Entity(e.text, e.start + n, e.end + n, e.type)

    return dataclasses.replace(record, id=f"{record.id}~punct", sentence="".join(out),
                               subject=move(record.subject), object=move(record.object))


def augment_records(records: Sequence[Record], kinds: Sequence[str], prob: float, seed: int,
                    labels: Sequence[str] | None = None) -> list[Record]:
    """Extra training records: for each record-level kind, an augmented copy of each record with
    probability `prob` (swap: of every record it applies to, as it adds no noise)."""
    rng = random.Random(seed)
    pool = entity_pool(records) if "entity" in kinds else {}
    out: list[Record] = []
    for r in records:
        if "swap" in kinds:
            new = swap(r, labels)
            if new is not None:
                out.append(new)
        if "entity" in kinds and rng.random() < prob:
            new = replace_entity(r, pool, rng)
            if new is not None:
                out.append(new)
        if "punct" in kinds and rng.random() < prob:
            new = insert_punct(r, rng)
            if new is not None:
                out.append(new)
    return out
