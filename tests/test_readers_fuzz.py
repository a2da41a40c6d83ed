"""Property tests: writers and readers round-trip; garbage gives records or DataError, nothing else."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rekit.data.labels import KLUE_RE_LABELS
from rekit.data.literal import LiteralError, parse_dict_literal
from rekit.data.readers import ReadOptions, read_records, write_csv, write_jsonl
from rekit.data.schema import Entity, Record
from rekit.errors import DataError

FUZZ = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
_PLACEHOLDERS = {"", "nan", "100", "blind"}  # mean "unlabeled" in community CSV files

# Any character but lone surrogates (no UTF-8 form, so no file can hold them).
chars = st.characters(blacklist_categories=("Cs",))
text = st.text(chars, min_size=1, max_size=40)


@st.composite
def records(draw) -> list[Record]:
    n = draw(st.integers(1, 4))
    ids = draw(st.lists(st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), min_size=1, max_size=8)
                        .filter(lambda s: not s.isspace()), min_size=n, max_size=n, unique=True))
    out = []
    for rid in ids:
        sentence = draw(st.text(chars, min_size=2, max_size=80).filter(lambda s: not s.isspace()))

        def entity() -> Entity:
            start = draw(st.integers(0, len(sentence) - 1))
            end = draw(st.integers(start + 1, len(sentence)))
            return Entity(sentence[start:end], start, end, draw(st.sampled_from(["PER", "ORG", "LOC", "DAT", "POH", "NOH"])))

        label = draw(st.one_of(st.none(), st.sampled_from(KLUE_RE_LABELS),
                               text.filter(lambda s: s.strip().lower() not in _PLACEHOLDERS)))
        source = draw(st.one_of(st.none(), text))
        out.append(Record(rid, sentence, entity(), entity(), label, source))
    return out


@pytest.fixture(scope="module")
def scratch(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


@FUZZ
@given(recs=records())
def test_csv_round_trip(scratch, recs):
    write_csv(recs, scratch / "rt.csv")
    back, report = read_records(scratch / "rt.csv")
    assert back == recs
    assert report.records == len(recs) and not report.repaired and not report.skipped


@FUZZ
@given(recs=records())
def test_jsonl_round_trip(scratch, recs):
    write_jsonl(recs, scratch / "rt.jsonl")
    back, report = read_records(scratch / "rt.jsonl")
    assert back == recs and report.offsets == "exclusive"


@FUZZ
@given(cell=st.one_of(text, st.text(st.sampled_from("{}[]():,'\"\\ uUxN0123456789-.eE_abcdefwordstart_idx"), max_size=60)))
def test_literal_parser_never_raises_anything_else(cell):
    try:
        value = parse_dict_literal(cell)
    except LiteralError:
        return
    assert isinstance(value, dict)


_OPTIONS = st.builds(
    ReadOptions,
    on_mismatch=st.sampled_from(["error", "repair", "skip"]),
    on_bad_row=st.sampled_from(["error", "skip"]),
    offsets=st.sampled_from(["auto", "inclusive", "exclusive"]),
)
_OFFSET = st.one_of(st.integers(-5, 60), st.text(max_size=4), st.none(), st.floats(allow_nan=True), st.booleans())
_ENTITY_CELL = st.one_of(
    text,
    st.builds(lambda w, s, e, t: repr({"word": w, "start_idx": s, "end_idx": e, "type": t}), text, _OFFSET, _OFFSET, text),
    st.builds(lambda d: json.dumps(d), st.dictionaries(text, st.one_of(text, st.integers(), st.none()), max_size=4)),
)


@FUZZ
@given(
    rows=st.lists(st.tuples(text, text, _ENTITY_CELL, _ENTITY_CELL, text, text), min_size=1, max_size=4),
    header=st.sampled_from([("id", "sentence", "subject_entity", "object_entity", "label", "source"),
                            ("Unnamed: 0", "sentence", "subj", "obj", "relation", "x")]),
    options=_OPTIONS,
)
def test_garbage_csv_cells(scratch, rows, header, options):
    path = scratch / "garbage.csv"
    with open(path, "w", encoding="utf-8", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)
    _records_or_data_error(path, options)


_JSON = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), text),
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(text, inner, max_size=4)),
    max_leaves=10,
)


@st.composite
def record_like(draw) -> object:
    """A KLUE/rekit-shaped object with some fields replaced by arbitrary JSON."""
    base = {"guid": "g", "sentence": "비틀즈와 조지", "subject_entity": {"word": "비틀즈", "start_idx": 0, "end_idx": 2, "type": "ORG"},  # noqa: E501 (Korean test data kept whole)
            "object_entity": {"word": "조지", "start_idx": 5, "end_idx": 6, "type": "PER"}, "label": 0, "source": "w"}
    for key in draw(st.lists(st.sampled_from(sorted(base)), max_size=3)):
        if draw(st.booleans()):
            base[key] = draw(_JSON)
        else:
            base.pop(key, None)
    return base


@FUZZ
@given(items=st.lists(st.one_of(record_like(), _JSON), min_size=1, max_size=4), options=_OPTIONS,
       as_lines=st.booleans())
def test_garbage_json(scratch, items, options, as_lines):
    path = scratch / ("garbage.jsonl" if as_lines else "garbage.json")
    if as_lines:
        path.write_text("\n".join(json.dumps(i) for i in items) + "\n", encoding="utf-8")
    else:
        path.write_text(json.dumps(items), encoding="utf-8")
    _records_or_data_error(path, options)


@FUZZ
@given(data=st.one_of(st.binary(max_size=300), text.map(lambda s: s.encode("utf-8"))),
       ext=st.sampled_from([".csv", ".json", ".jsonl", ".tsv", ".txt"]), options=_OPTIONS)
def test_garbage_bytes(scratch, data, ext, options):
    path = scratch / f"bytes{ext}"
    path.write_bytes(data)
    _records_or_data_error(path, options)


@FUZZ
@given(fields=st.lists(st.one_of(text, st.integers(-3, 50).map(str)), min_size=1, max_size=11), options=_OPTIONS)
def test_garbage_tsv(scratch, fields, options):
    path = scratch / "garbage.tsv"
    clean = [f.replace("\t", " ").replace("\n", " ").replace("\r", " ") for f in fields]
    path.write_text("\t".join(clean) + "\n", encoding="utf-8")
    _records_or_data_error(path, options)


def _records_or_data_error(path: Path, options: ReadOptions) -> None:
    try:
        recs, report = read_records(path, options)
    except DataError:
        return
    assert report.records == len(recs)
    assert report.rows == report.records + len(report.skipped)
    for r in recs:
        assert isinstance(r, Record)
        assert r.subject.span_ok(r.sentence) and r.object.span_ok(r.sentence)
