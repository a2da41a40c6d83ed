"""Records -> model features: token ids plus the token index of each entity's start marker.

Sentences longer than `max_length` tokens are cut to a window that keeps both marked entities
(never an entity cut out): first a contiguous window around them, else the two entity spans
with what context fits, joined.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from rekit.data.labels import LabelMap
from rekit.data.schema import Record
from rekit.encoding.markers import Marked, first_segment, mark
from rekit.errors import DataError

IGNORE_LABEL = -100  # unlabeled rows (test data)


@dataclass
class Features:
    """Column-oriented features of a list of records (index i = record i)."""

    input_ids: list[list[int]] = field(default_factory=list)
    token_type_ids: list[list[int]] | None = None
    subj_pos: list[int] = field(default_factory=list)  # (N,) token index of the subject start marker
    obj_pos: list[int] = field(default_factory=list)
    labels: list[int] = field(default_factory=list)  # IGNORE_LABEL where unlabeled
    # (N, C) float32 target probabilities for distillation (training/distill.py), row i with record i
    soft_targets: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.input_ids)

    def lengths(self) -> list[int]:
        return [len(x) for x in self.input_ids]

    def subset(self, idx: Sequence[int]) -> Features:
        pick = lambda xs: [xs[i] for i in idx]  # noqa: E731
        return Features(
            pick(self.input_ids),
            None if self.token_type_ids is None else pick(self.token_type_ids),
            pick(self.subj_pos), pick(self.obj_pos), pick(self.labels),
            None if self.soft_targets is None else self.soft_targets[np.asarray(idx, dtype=np.int64)],
        )


@dataclass
class EncodeStats:
    windowed: int = 0  # sentences cut to a window around the entities
    spliced: int = 0  # entities too far apart: context between them dropped
    clipped: int = 0  # an entity itself longer than the budget: its tail cut (start marker kept)

    def summary(self) -> str:
        if not (self.windowed or self.spliced or self.clipped):
            return "no example exceeded max_length"
        return (f"{self.windowed} examples windowed around their entities, {self.spliced} spliced "
                f"(context between far-apart entities dropped), {self.clipped} with an entity clipped")


class REEncoder:
    """Turns records into `Features` for one tokenizer and one entity representation."""

    def __init__(self, tokenizer, marker: str, max_length: int, first_segment_mode: str = "auto"):
        if not getattr(tokenizer, "is_fast", False):
            raise DataError("rekit needs a fast (Rust) tokenizer for character offsets; this model has only a slow one")
        self.tokenizer = tokenizer
        self.marker = marker
        self.max_length = max_length
        self.first_segment_mode = first_segment_mode
        self.stats = EncodeStats()

    def texts(self, record: Record) -> tuple[str | None, Marked]:
        sep = self.tokenizer.sep_token or "[SEP]"
        return first_segment(record, self.first_segment_mode, self.marker, sep), mark(record, self.marker)

    def encode(self, records: Sequence[Record], label_map: LabelMap | None = None,
               chunk: int = 1024) -> Features:
        feats = Features(token_type_ids=[])
        with_types = "token_type_ids" in self.tokenizer.model_input_names
        for i in range(0, len(records), chunk):
            batch = records[i : i + chunk]
            firsts, marks = zip(*(self.texts(r) for r in batch))
            has_first = firsts[0] is not None
            encs = self._encodings(firsts if has_first else None, [m.text for m in marks])
            for j, record in enumerate(batch):
                ids = encs[j].ids
                if len(ids) <= self.max_length:
                    view = _View(encs[j])
                    sp = _token_at(view, marks[j].subj_char, int(has_first))
                    op = _token_at(view, marks[j].obj_char, int(has_first))
                    types = encs[j].type_ids if with_types else None
                else:
                    ids, types, sp, op = self._encode_long(firsts[j], marks[j], record)
                feats.input_ids.append(list(ids))
                if types is not None and feats.token_type_ids is not None:
                    feats.token_type_ids.append(list(types))
                feats.subj_pos.append(sp)
                feats.obj_pos.append(op)
                feats.labels.append(self._label(record, label_map))
        if not feats.token_type_ids:
            feats.token_type_ids = None
        return feats

    def _encodings(self, firsts: Sequence[str | None] | None, texts: list[str]) -> list:
        """The batch's `tokenizers.Encoding`s, as `tokenizer(firsts, texts)` makes them (special
        tokens added, no truncation or padding) without its conversion of every row into Python
        lists and dicts, which took as long as the tokenizing itself (BENCHMARKS.md)."""
        backend = self.tokenizer.backend_tokenizer
        backend.no_truncation()
        backend.no_padding()
        backend.encode_special_tokens = bool(getattr(self.tokenizer, "split_special_tokens", False))
        inputs = list(zip(firsts, texts)) if firsts is not None else texts
        return backend.encode_batch(inputs, add_special_tokens=True)

    @staticmethod
    def _label(record: Record, label_map: LabelMap | None) -> int:
        if record.label is None or label_map is None:
            return IGNORE_LABEL
        if record.label not in label_map.label2id:
            raise DataError(f"record {record.id}: label {record.label!r} is not in the model's label map")
        return label_map.label2id[record.label]

    # -- one example ----------------------------------------------------------------------
    def _tokenize(self, first: str | None, text: str):
        args = (first, text) if first is not None else (text,)
        return self.tokenizer(*args, return_offsets_mapping=True, truncation=False)

    def _encode_long(self, first: str | None, marked: Marked, record: Record):
        enc = self._tokenize(first, marked.text)
        original = marked
        # Re-tokenizing a cut text can add a token or two at the cut (a word piece becomes a
        # word); shrink the budget by the excess and retry before falling back to a hard cut.
        slack = 0
        for _ in range(4):
            marked, kind = self._shrink(first, original, enc, record, slack)
            cut = self._tokenize(first, marked.text)
            excess = len(cut["input_ids"]) - self.max_length
            if excess <= 0:
                enc = cut
                setattr(self.stats, kind, getattr(self.stats, kind) + 1)
                break
            slack += excess
        else:
            # One entity alone is longer than the budget: truncate the tail (start markers come first).
            self.stats.clipped += 1
            args = (first, marked.text) if first is not None else (marked.text,)
            enc = self.tokenizer(*args, return_offsets_mapping=True, max_length=self.max_length,
                                 truncation="only_second" if first is not None else True)
        seg = 1 if first is not None else 0
        sp, op = _token_at(enc, marked.subj_char, seg), _token_at(enc, marked.obj_char, seg)
        types = enc.get("token_type_ids")
        return enc["input_ids"], types, sp, op

    def _text_tokens(self, enc, seg: int) -> list[tuple[int, int]]:
        return [off for off, s in zip(enc["offset_mapping"], enc.sequence_ids()) if s == seg]

    def _shrink(self, first, marked: Marked, enc, record: Record, slack: int = 0) -> tuple[Marked, str]:
        """Cut the marked text to at most the token budget, keeping both entity spans.
        Returns the cut text and how: 'windowed' or 'spliced'."""
        seg = 1 if first is not None else 0
        offsets = self._text_tokens(enc, seg)
        budget = self.max_length - (len(enc["input_ids"]) - len(offsets)) - slack
        if budget < 8:
            raise DataError(f"record {record.id}: the first segment alone nearly fills max_length={self.max_length}")
        lo = min(marked.subj_span[0], marked.obj_span[0])
        hi = max(marked.subj_span[1], marked.obj_span[1])
        a = next(i for i, (s, e) in enumerate(offsets) if e > lo)
        b = max(i for i, (s, e) in enumerate(offsets) if s < hi) + 1
        text = marked.text
        if b - a <= budget:  # a contiguous window around both entities, context split evenly
            extra = budget - (b - a)
            a2 = max(0, a - extra // 2)
            b2 = min(len(offsets), a2 + budget)
            a2 = max(0, b2 - budget)
            cs, ce = offsets[a2][0], offsets[b2 - 1][1]
            return Marked(text[cs:ce], _shift(marked.subj_span, -cs), _shift(marked.obj_span, -cs)), "windowed"
        # Entities too far apart: keep each marked span (start marker first), drop what lies between.
        first_span, second_span = sorted([marked.subj_span, marked.obj_span])
        if first_span[1] > second_span[0]:  # overlapping spans that are still too long: clip below
            return marked, "spliced"
        piece1, piece2 = text[first_span[0]:first_span[1]], text[second_span[0]:second_span[1]]
        joined = piece1 + " … " + piece2
        off2 = len(piece1) + 3 - second_span[0]
        def move(span):
            return _shift(span, -first_span[0]) if span == first_span else _shift(span, off2)
        return Marked(joined, move(marked.subj_span), move(marked.obj_span)), "spliced"


def _shift(span: tuple[int, int], by: int) -> tuple[int, int]:
    return span[0] + by, span[1] + by


class _View:
    """A `tokenizers.Encoding` under the names `_token_at` reads from a transformers encoding."""

    def __init__(self, enc):
        self._enc = enc

    def __getitem__(self, key):
        if key != "offset_mapping":
            raise KeyError(key)
        return self._enc.offsets

    def sequence_ids(self):
        return self._enc.sequence_ids


def _token_at(enc, char: int, seg: int) -> int:
    """Index of the first token of segment `seg` that ends after character `char`."""
    for i, ((_s, e), sid) in enumerate(zip(enc["offset_mapping"], enc.sequence_ids())):
        if sid == seg and e > char:
            return i
    return 0  # the marker was cut away (only after a hard clip): fall back to [CLS]
