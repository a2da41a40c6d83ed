"""The synthetic Korean demo corpus: deterministic, valid spans, sensible label mix."""

from __future__ import annotations

from collections import Counter

import pytest

from rekit.baselines import TypePairMajority
from rekit.data.labels import KLUE_RE_LABELS, LabelMap
from rekit.data.synthetic import LABELS, NO_RELATION, RELATIONS, attach, make_corpus, make_splits

EXPECTED_TYPES = {
    "per:employee_of": ("PER", "ORG"),
    "org:top_members/employees": ("ORG", "PER"),
    "per:place_of_birth": ("PER", "LOC"),
    "per:date_of_birth": ("PER", "DAT"),
    "org:place_of_headquarters": ("ORG", "LOC"),
    "per:spouse": ("PER", "PER"),
    "org:founded": ("ORG", "DAT"),
}


@pytest.fixture(scope="module")
def corpus():
    return make_corpus(2000, seed=0)


def test_deterministic_for_a_seed():
    assert make_corpus(300, seed=7) == make_corpus(300, seed=7)
    assert make_corpus(300, seed=7) != make_corpus(300, seed=8)
    assert make_corpus(50, seed=7) == make_corpus(300, seed=7)[:50]  # a prefix is stable
    assert make_corpus(0) == []


def test_spans_valid(corpus):
    for r in corpus:
        assert r.subject.span_ok(r.sentence), r
        assert r.object.span_ok(r.sentence), r
        assert r.sentence[r.subject.start : r.subject.end] == r.subject.text
        assert r.sentence[r.object.start : r.object.end] == r.object.text
        # entities don't overlap; no unfilled template slot is left behind
        assert r.subject.end <= r.object.start or r.object.end <= r.subject.start
        assert "{" not in r.sentence and "}" not in r.sentence


def test_ids_source_and_labels(corpus):
    assert [r.id for r in corpus[:3]] == ["demo-000000", "demo-000001", "demo-000002"]
    assert len({r.id for r in corpus}) == len(corpus)
    assert {r.source for r in corpus} == {"synthetic"}
    assert set(LABELS) <= set(KLUE_RE_LABELS) and 6 <= len(RELATIONS) <= 8
    counts = Counter(r.label for r in corpus)
    assert set(counts) == set(LABELS)  # every relation and no_relation occur
    assert 0.2 <= counts[NO_RELATION] / len(corpus) <= 0.4
    assert min(counts[rel] for rel in RELATIONS) >= 0.05 * len(corpus)


def test_entity_types(corpus):
    seen_nr_pairs = set()
    for r in corpus:
        pair = (r.subject.type, r.object.type)
        assert {r.subject.type, r.object.type} <= {"PER", "ORG", "LOC", "DAT"}
        if r.label == NO_RELATION:
            seen_nr_pairs.add(pair)
        else:
            assert pair == EXPECTED_TYPES[r.label]
    # no_relation covers every relation's type pair, so types alone can't decide
    assert set(EXPECTED_TYPES.values()) <= seen_nr_pairs


def test_no_duplicate_examples(corpus):
    keys = [(r.sentence, r.subject.start, r.object.start) for r in corpus]
    assert len(set(keys)) == len(keys)


def test_splits_sizes_and_disjoint():
    train, test = make_splits(seed=0)
    assert (len(train), len(test)) == (1200, 300)
    assert all(r.label is not None for r in test)
    keys = lambda rs: {(r.sentence, r.subject.start, r.object.start) for r in rs}  # noqa: E731
    assert not keys(train) & keys(test)
    assert {r.id for r in train}.isdisjoint({r.id for r in test})
    assert make_splits(seed=0) == (train, test)


def test_particles():
    assert attach("서울", "으로") == "로"  # final ㄹ
    assert attach("부산", "으로") == "으로"
    assert attach("대구", "으로") == "로"
    assert attach("김민준", "은") == "은" and attach("이서연", "은") == "은"
    assert attach("조현우", "은") == "는" and attach("최수아", "을") == "를"
    assert attach("한빛전자", "과") == "와" and attach("부산", "이") == "이"
    assert attach("서울", "에서") == "에서"  # invariant particles pass through


def test_type_pairs_alone_are_not_enough():
    # The demo is meant to need the sentence: the type-pair baseline must stay well short.
    train, test = make_splits(seed=0)
    pred = TypePairMajority().fit(train).predict(test)
    acc = sum(p == r.label for p, r in zip(pred, test)) / len(test)
    assert 0.5 < acc < 0.85
    LabelMap.infer(r.label for r in train)  # the labels form a valid (KLUE-subset) label map
