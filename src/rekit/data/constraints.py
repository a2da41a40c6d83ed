"""Entity-type constraints: which labels each (subject type, object type) pair takes in training.

Relations are typed: in KLUE-RE a per:* label needs a PER subject, and each of the 12 type pairs
of train takes only 8 to 19 of the 30 labels. A model trained with `--type-constraints` keeps, in
its spec, the labels seen with each pair in its training file (`learn_type_pairs`). At
prediction time (`constrain`) a row's probabilities of labels never seen with its pair become 0
and the rest are renormalised. A row whose pair training never saw, or whose entities have no
types, keeps its probabilities unchanged: the constraint only removes what training ruled out.

Why it helps: a network gives every label some probability on every row, and for a rare label
those crumbs on rows of the wrong pair rank above some of its true rows (AUPRC) or, for a weak
model, win the argmax (micro-F1). BENCHMARKS.md measures it on held-out training rows.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

from rekit.data.schema import Record

SEP = "|"  # "PER|ORG": a JSON object key for a (subject type, object type) pair
UNTYPED = ("", "UNK", None)
MIN_PAIR_ROWS = 20  # a pair seen fewer times in training is not constrained (KLUE-RE's rarest: 153 rows)


def pair_key(record: Record) -> str | None:
    """The record's type pair as a key, or None when either entity has no type ("" or UNK, the
    type of a file without types)."""
    s, o = record.subject.type, record.object.type
    return f"{s}{SEP}{o}" if s not in UNTYPED and o not in UNTYPED else None


def learn_type_pairs(records: Iterable[Record], min_rows: int = MIN_PAIR_ROWS) -> dict[str, list[str]]:
    """{"SUBJ|OBJ": sorted labels seen with that pair} over the labeled, typed records. A pair with
    fewer than `min_rows` labeled rows is left out (so left unconstrained): a label missing from a
    handful of rows is no evidence that the pair cannot take it."""
    seen: dict[str, set[str]] = {}
    rows: dict[str, int] = {}
    for r in records:
        key = pair_key(r)
        if key is not None and r.label is not None:
            seen.setdefault(key, set()).add(str(r.label))
            rows[key] = rows.get(key, 0) + 1
    return {k: sorted(v) for k, v in sorted(seen.items()) if rows[k] >= min_rows}


def describe_types(spec, records: Sequence[Record], constraints: bool) -> None:
    """What a new model's spec keeps about its training file's entity types: the types seen, and
    with `constraints` (--type-constraints) the labels each type pair takes."""
    spec.entity_types = sorted({e.type for r in records for e in (r.subject, r.object)})
    spec.type_pairs = learn_type_pairs(records) if constraints else None


def allowed_mask(records: Sequence[Record], type_pairs: dict[str, list[str]], labels: Sequence[str]) -> np.ndarray:
    """(N, C) bool: True where the label is allowed for the row (every label for a row whose pair
    is unknown or untyped)."""
    col = {label: j for j, label in enumerate(labels)}
    rows_of: dict[str, np.ndarray] = {}
    for key, allowed in type_pairs.items():
        row = np.zeros(len(labels), dtype=bool)
        row[[col[x] for x in allowed if x in col]] = True
        if row.any():
            rows_of[key] = row
    everything = np.ones(len(labels), dtype=bool)
    return np.stack([rows_of.get(pair_key(r) or "", everything) for r in records]) if records else \
        np.ones((0, len(labels)), dtype=bool)


def constrain(probs: np.ndarray, records: Sequence[Record], type_pairs: dict[str, list[str]] | None,
              labels: Sequence[str]) -> np.ndarray:
    """`probs` (N, C) with each row's disallowed labels at 0, renormalised. A row whose allowed
    labels all have probability 0 (underflow) is left as it was. No pairs (None/{}): unchanged."""
    if not type_pairs or len(probs) == 0:
        return probs
    q = np.where(allowed_mask(records, type_pairs, labels), probs, 0)
    total = q.sum(axis=1, keepdims=True)
    ok = total[:, 0] > 0
    q[ok] = q[ok] / total[ok]
    q[~ok] = probs[~ok]
    return q.astype(probs.dtype, copy=False)
