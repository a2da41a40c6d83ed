"""Readers and writers on small fixtures written here, and on the shared KLUE-RE files."""

from __future__ import annotations

import json
import time
from collections import Counter
from pathlib import Path

import pytest

from rekit.data.labels import KLUE_RE_LABELS, KLUE_RE_OFFICIAL_ORDER
from rekit.data.readers import (
    ReadOptions,
    ReadReport,
    RecordReader,
    iter_records,
    read_records,
    write_csv,
    write_jsonl,
)
from rekit.data.schema import Entity, Record
from rekit.errors import ConfigError, DataError

KLUE = Path(__file__).resolve().parents[2] / "shared" / "data" / "klue-re"
needs_klue = pytest.mark.skipif(not (KLUE / "train.csv").is_file(), reason="shared KLUE-RE data not present")

S1 = "〈Something〉는 조지 해리슨이 쓰고 비틀즈가 1969년 앨범 《Abbey Road》에 담은 노래다."
S2 = "호남이 기반인 바른미래당·대안신당·민주평화당이 우여곡절 끝에 합당해 민생당(가칭)으로 재탄생한다."
RECORDS = [
    Record("0", S1, Entity("비틀즈", 24, 27, "ORG"), Entity("조지 해리슨", 13, 19, "PER"), "no_relation", "wikipedia"),
    Record("1", S2, Entity("민주평화당", 19, 24, "ORG"), Entity("대안신당", 14, 18, "ORG"), "org:member_of", "wikitree"),
    Record("x-2", 'He said "O\'Neil, \\ ok"\tand\nleft.', Entity("O'Neil", 9, 15, "PER"), Entity("He", 0, 2, "PER"), None, None),
]


def _klue_entity(e: Entity) -> dict:
    return {"word": e.text, "start_idx": e.start, "end_idx": e.end - 1, "type": e.type}


def _write_klue_json(path: Path, records: list[Record], labels: list[object]) -> None:
    data = [
        {"guid": f"klue-re-v1_train_{i:05d}", "sentence": r.sentence, "subject_entity": _klue_entity(r.subject),
         "object_entity": _klue_entity(r.object), "label": lab, "source": r.source or "wikipedia"}
        for i, (r, lab) in enumerate(zip(records, labels))
    ]
    path.write_text(json.dumps(data, ensure_ascii=False, indent=2), encoding="utf-8")


# --- round trips -----------------------------------------------------------------------


@pytest.mark.parametrize("writer, name", [(write_csv, "data.csv"), (write_jsonl, "data.jsonl")])
def test_round_trip(tmp_path, writer, name):
    writer(RECORDS, tmp_path / name)
    records, report = read_records(tmp_path / name)
    assert records == RECORDS
    assert report.records == report.rows == 3 and not report.repaired and not report.skipped
    assert report.offsets == ("inclusive" if name.endswith(".csv") else "exclusive")


def test_write_csv_is_the_community_layout(tmp_path):
    write_csv(RECORDS[:1], tmp_path / "a.csv")
    text = (tmp_path / "a.csv").read_text(encoding="utf-8")
    assert text.splitlines()[0] == "id,sentence,subject_entity,object_entity,label,source"
    assert "{'word': '비틀즈', 'start_idx': 24, 'end_idx': 26, 'type': 'ORG'}" in text
    assert "\r\n" not in text


def test_write_csv_marks_unlabeled_rows_as_100(tmp_path):
    write_csv(RECORDS[2:], tmp_path / "t.csv")
    assert ",100," in (tmp_path / "t.csv").read_text(encoding="utf-8")
    records, report = read_records(tmp_path / "t.csv")
    assert records[0].label is None
    assert any("label 100 treated as unlabeled (1 row)" in n for n in report.notes)


def test_writes_are_atomic_and_replace(tmp_path):
    path = tmp_path / "out" / "d.jsonl"
    write_jsonl(RECORDS, path)
    write_jsonl(RECORDS[:1], path)
    assert len(path.read_text(encoding="utf-8").splitlines()) == 1
    assert sorted(p.name for p in path.parent.iterdir()) == ["d.jsonl"]  # no temp files left


def test_jsonl_schema(tmp_path):
    write_jsonl(RECORDS[:1], tmp_path / "a.jsonl")
    line = json.loads((tmp_path / "a.jsonl").read_text(encoding="utf-8"))
    assert line == {
        "id": "0", "sentence": S1, "subject": {"text": "비틀즈", "start": 24, "end": 27, "type": "ORG"},
        "object": {"text": "조지 해리슨", "start": 13, "end": 19, "type": "PER"},
        "label": "no_relation", "source": "wikipedia",
    }


# --- KLUE JSON -------------------------------------------------------------------------


def test_klue_json_int_labels_use_the_official_order(tmp_path):
    path = tmp_path / "klue-re-v1_dev.json"
    _write_klue_json(path, RECORDS[:2], [1, "per:title"])
    records, report = read_records(path)
    assert report.format == "klue-json" and report.offsets == "inclusive"
    assert records[0].label == "org:dissolved" == KLUE_RE_OFFICIAL_ORDER[1]
    assert KLUE_RE_LABELS[1] != "org:dissolved"  # the competition order differs
    assert records[1].label == "per:title"
    assert records[0].id == "klue-re-v1_train_00000"
    assert records[0].subject == RECORDS[0].subject
    assert any("official KLUE-RE order" in n for n in report.notes)


def test_klue_json_streams_many_and_huge_elements(tmp_path):
    big = "가" * 300_000 + " 비틀즈"  # one element larger than the read buffer
    rec = Record("big", big, Entity("비틀즈", 300_001, 300_004, "ORG"), Entity("가가", 0, 2, "POH"), "no_relation")
    records = [Record(str(i), r.sentence, r.subject, r.object, r.label, "s") for i, r in enumerate(RECORDS[:2] * 1500)]
    records.insert(700, rec)
    path = tmp_path / "many.json"
    _write_klue_json(path, records, [r.label for r in records])
    back, report = read_records(path)
    assert len(back) == len(records) == report.records
    assert back[700].sentence == big and back[700].subject == rec.subject
    assert [r.sentence for r in back] == [r.sentence for r in records]


def test_klue_json_edge_shapes(tmp_path):
    path = tmp_path / "a.json"
    path.write_text(" \n [ ] \n", encoding="utf-8")
    assert read_records(path)[0] == []
    _write_klue_json(path, RECORDS[:1], ["no_relation"])
    path.write_text(path.read_text(encoding="utf-8").rstrip()[:-1] + ",\n]", encoding="utf-8")  # trailing comma
    assert len(read_records(path)[0]) == 1
    path.write_text(path.read_text(encoding="utf-8") + " []", encoding="utf-8")
    with pytest.raises(DataError, match="unexpected text after the JSON list"):
        read_records(path)


# --- legacy TSV ------------------------------------------------------------------------


def test_legacy_tsv(tmp_path):
    path = tmp_path / "train.tsv"
    path.write_text(
        f"wikipedia-1\t{S1}\t비틀즈\t24\t26\t조지 해리슨\t13\t18\t인물:동료\n"
        f"wikipedia-2\t{S2}\t민주평화당\t19\t23\t대안신당\t14\t17\tblind\n",
        encoding="utf-8",
    )
    records, report = read_records(path)
    assert report.format == "tsv-legacy"
    assert records[0].subject == Entity("비틀즈", 24, 27, "UNK") and records[0].object.text == "조지 해리슨"
    assert records[0].label == "인물:동료" and records[1].label is None
    assert any("'UNK'" in n for n in report.notes) and any("blind" in n for n in report.notes)


def test_tsv_with_a_header_reads_as_columns(tmp_path):
    path = tmp_path / "a.tsv"
    cells = lambda e: repr(_klue_entity(e))  # noqa: E731
    path.write_text(
        "id\tsentence\tsubject_entity\tobject_entity\tlabel\tsource\n"
        f"0\t{S1}\t{cells(RECORDS[0].subject)}\t{cells(RECORDS[0].object)}\tno_relation\twikipedia\n",
        encoding="utf-8",
    )
    records, report = read_records(path)
    assert report.format == "csv" and records == RECORDS[:1]


# --- detection, mapping, options -------------------------------------------------------


def test_format_detection_by_content(tmp_path):
    write_csv(RECORDS, tmp_path / "a.csv")
    write_jsonl(RECORDS, tmp_path / "a.jsonl")
    (tmp_path / "csv.txt").write_bytes((tmp_path / "a.csv").read_bytes())
    (tmp_path / "lines.json").write_bytes((tmp_path / "a.jsonl").read_bytes())
    (tmp_path / "lines.data").write_bytes((tmp_path / "a.jsonl").read_bytes())
    assert read_records(tmp_path / "csv.txt")[1].format == "csv"
    records, report = read_records(tmp_path / "lines.json")
    assert report.format == "jsonl" and records == RECORDS
    assert any("one object per line" in n for n in report.notes)
    assert read_records(tmp_path / "lines.data")[1].format == "jsonl"
    assert read_records(tmp_path / "csv.txt", ReadOptions(format="csv"))[0] == RECORDS
    with pytest.raises(ConfigError):
        read_records(tmp_path / "a.csv", ReadOptions(format="parquet"))


def test_offset_convention_is_detected(tmp_path):
    # A CSV whose end_idx is exclusive (some community exports do this).
    write_csv(RECORDS[:2], tmp_path / "a.csv")
    text = (tmp_path / "a.csv").read_text(encoding="utf-8")
    text = text.replace("'end_idx': 26,", "'end_idx': 27,").replace("'end_idx': 18,", "'end_idx': 19,")
    text = text.replace("'end_idx': 23,", "'end_idx': 24,").replace("'end_idx': 17,", "'end_idx': 18,")
    (tmp_path / "x.csv").write_text(text, encoding="utf-8")
    records, report = read_records(tmp_path / "x.csv")
    assert report.offsets == "exclusive" and records == RECORDS[:2]
    with pytest.raises(DataError, match="--on-mismatch"):
        read_records(tmp_path / "x.csv", ReadOptions(offsets="inclusive"))
    records, report = read_records(tmp_path / "a.csv", ReadOptions(offsets="inclusive"))
    assert records == RECORDS[:2]


def test_explicit_column_and_key_mapping(tmp_path):
    path = tmp_path / "custom.csv"
    sub = "{'surface': '비틀즈', 'from': 24, 'to': 26, 'kind': 'ORG'}"
    obj = "{'surface': '조지 해리슨', 'from': 13, 'to': 18, 'kind': 'PER'}"
    path.write_text(f'번호,문장,주어,목적어,관계\n7,{S1},"{sub}","{obj}",no_relation\n', encoding="utf-8")
    with pytest.raises(DataError, match="missing column for sentence"):
        read_records(path)
    options = ReadOptions(
        columns={"id": "번호", "sentence": "문장", "subject": "주어", "object": "목적어", "label": "관계"},
        entity_keys={"text": "surface", "start": "from", "end": "to", "type": "kind"},
    )
    records, _ = read_records(path, options)
    assert records == [Record("7", S1, RECORDS[0].subject, RECORDS[0].object, "no_relation", None)]


def test_options_are_validated():
    with pytest.raises(ConfigError, match="on_mismatch"):
        ReadOptions(on_mismatch="fix")
    with pytest.raises(ConfigError, match="on_bad_row"):
        ReadOptions(on_bad_row="repair")
    with pytest.raises(ConfigError, match="offsets"):
        ReadOptions(offsets="both")
    with pytest.raises(ConfigError, match="columns"):
        ReadOptions(columns={"sentense": "x"})
    with pytest.raises(ConfigError, match="limit"):
        ReadOptions(limit=-1)
    with pytest.raises(ConfigError, match="encoding"):
        read_records(Path(__file__), ReadOptions(encoding="no-such-codec"))


def test_limit_and_streaming_report(tmp_path):
    write_csv(RECORDS, tmp_path / "a.csv")
    records, report = read_records(tmp_path / "a.csv", ReadOptions(limit=2))
    assert records == RECORDS[:2] and report.records == 2
    assert any("limit" in n for n in report.notes)
    reader = iter_records(tmp_path / "a.csv")
    assert isinstance(reader, RecordReader) and isinstance(reader.report, ReadReport)
    assert next(reader) == RECORDS[0]
    assert reader.report.records == 1
    assert list(reader) == RECORDS[1:]
    assert reader.report.records == 3 and reader.report.rows == 3
    with iter_records(tmp_path / "a.csv") as early:
        next(early)  # closing early releases the file


def test_summary_and_error_format(tmp_path):
    write_csv(RECORDS, tmp_path / "a.csv")
    _, report = read_records(tmp_path / "a.csv")
    assert report.summary().splitlines()[0] == (
        "read 3 rows from a.csv (csv, inclusive end offsets): 3 records, 0 repaired, 0 skipped"
    )
    text = (tmp_path / "a.csv").read_text(encoding="utf-8").replace("'start_idx': 24", "'start_idx': 23")
    (tmp_path / "a.csv").write_text(text, encoding="utf-8")
    with pytest.raises(DataError) as info:
        read_records(tmp_path / "a.csv")
    err = info.value
    assert err.row == 1 and err.path.endswith("a.csv")
    # Offsets are shown as written in the file (inclusive here), with the text they cover.
    assert "id '0': subject span 23..26 is ' 비틀즈', expected '비틀즈'" in str(err)
    assert "--on-mismatch repair or skip" in str(err)
    _, report = read_records(tmp_path / "a.csv", ReadOptions(on_mismatch="repair"))
    assert "1 repaired" in report.summary() and "repaired row 1" in report.summary()


# --- the shared KLUE-RE data -----------------------------------------------------------


@needs_klue
def test_real_train_first_2000_round_trip(tmp_path):
    records, report = read_records(KLUE / "train.csv", ReadOptions(limit=2000))
    assert len(records) == 2000 and report.format == "csv" and report.offsets == "inclusive"
    assert records[0].subject == Entity("비틀즈", 24, 27, "ORG")
    assert all(r.subject.span_ok(r.sentence) and r.object.span_ok(r.sentence) for r in records)
    write_csv(records, tmp_path / "t.csv")
    write_jsonl(records, tmp_path / "t.jsonl")
    assert read_records(tmp_path / "t.csv")[0] == records
    assert read_records(tmp_path / "t.jsonl")[0] == records


@needs_klue
def test_real_train_full_pass():
    t0 = time.perf_counter()
    labels: Counter[str | None] = Counter()
    reader = iter_records(KLUE / "train.csv")
    for rec in reader:
        labels[rec.label] += 1
    elapsed = time.perf_counter() - t0
    report = reader.report
    assert report.records == report.rows == 32_470
    assert not report.repaired and not report.skipped and report.notes == []
    assert labels.most_common(1)[0][0] == "no_relation" and len(labels) == 30
    assert set(labels) == set(KLUE_RE_LABELS)
    assert elapsed < 10, f"{elapsed:.1f}s"


@needs_klue
def test_real_dev():
    records, report = read_records(KLUE / "dev.csv")
    assert len(records) == report.records == 7_765
    assert Counter(r.label for r in records).most_common(1)[0][0] == "no_relation"
    assert len({r.id for r in records}) == 7_765
