"""The malformed-input corpus (tests/malformed/cases.yaml) plus generated big-file cases."""

from __future__ import annotations

import time
import tracemalloc
from pathlib import Path

import pytest
import yaml

from rekit.data.readers import ReadOptions, iter_records, read_records
from rekit.data.schema import Entity, Record
from rekit.errors import DataError

HERE = Path(__file__).resolve().parent / "malformed"
CASES = yaml.safe_load((HERE / "cases.yaml").read_text(encoding="utf-8"))["cases"]


def test_corpus_is_big_enough():
    assert len(CASES) >= 30
    files = {c["file"] for c in CASES}
    assert all((HERE / f).is_file() for f in files)
    # Every file in the folder is exercised by some case.
    assert {p.name for p in HERE.iterdir() if p.name not in ("cases.yaml", ".gitattributes")} <= files


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_case(case, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a cell that ran `touch X` would create X here
    path = HERE / case["file"]
    options = ReadOptions(**case.get("options", {}))
    if "error" in case:
        with pytest.raises(DataError) as info:
            read_records(path, options)
        message = str(info.value)
        for part in [case["file"], *case["error"]]:
            assert part in message, f"{part!r} not in {message!r}"
        assert "\n" not in message  # the CLI prints it as one line
    else:
        records, report = read_records(path, options)
        assert report.records == len(records) == case["records"]
        assert len(report.repaired) == case.get("repaired", 0)
        assert len(report.skipped) == case.get("skipped", 0)
        assert report.rows == report.records + len(report.skipped)
        for part in case.get("notes", []):
            assert any(part in n for n in report.notes), f"{part!r} not in {report.notes}"
        problems = [i.problem for i in report.repaired + report.skipped]
        for part in case.get("issues", []):
            assert any(part in p for p in problems), f"{part!r} not in {problems}"
        for rec in records:
            assert rec.subject.span_ok(rec.sentence) and rec.object.span_ok(rec.sentence)
    assert list(tmp_path.iterdir()) == []


def test_code_in_cell_never_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for name in ("code_in_cell.csv", "code_in_value.csv"):
        assert "touch PWNED_BY_REKIT" in (HERE / name).read_text(encoding="utf-8")
        with pytest.raises(DataError):
            read_records(HERE / name)
        read_records(HERE / name, ReadOptions(on_bad_row="skip"))
    assert not (tmp_path / "PWNED_BY_REKIT").exists()
    assert not Path("PWNED_BY_REKIT").exists()


def test_repair_picks_the_occurrence_nearest_the_given_offset(tmp_path):
    from rekit.data.readers import write_csv

    sentence = "삼성 그리고 삼성 그리고 또 삼성"
    rec = Record("0", sentence, Entity("삼성", 7, 9, "ORG"), Entity("그리고", 3, 6, "POH"), "no_relation")
    write_csv([rec], tmp_path / "a.csv")
    text = (tmp_path / "a.csv").read_text(encoding="utf-8").replace("'start_idx': 7, 'end_idx': 8", "'start_idx': 9, 'end_idx': 10")  # noqa: E501 (Korean test data kept whole)
    (tmp_path / "a.csv").write_text(text, encoding="utf-8")
    records, report = read_records(tmp_path / "a.csv", ReadOptions(on_mismatch="repair"))
    assert records[0].subject == Entity("삼성", 7, 9, "ORG")  # 7 is 2 away from 9; 16 is 7 away
    assert report.repaired[0].row == 1 and report.repaired[0].action == "repaired"


def _big_row(i: int) -> str:
    return (
        f'{i},"{i}번째 문장에서 비틀즈와 조지 해리슨은 함께 노래했다.",'
        f"\"{{'word': '비틀즈', 'start_idx': {len(str(i)) + 8}, 'end_idx': {len(str(i)) + 10}, 'type': 'ORG'}}\","
        f"\"{{'word': '조지 해리슨', 'start_idx': {len(str(i)) + 13}, 'end_idx': {len(str(i)) + 18}, 'type': 'PER'}}\","
        "per:colleagues,wikipedia\n"
    )


def test_100k_rows_stream_in_bounded_memory(tmp_path):
    path = tmp_path / "big.csv"
    with open(path, "w", encoding="utf-8") as f:
        f.write("id,sentence,subject_entity,object_entity,label,source\n")
        f.writelines(_big_row(i) for i in range(100_000))
    assert path.stat().st_size > 25_000_000
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        reader = iter_records(path)
        count = 0
        for _rec in reader:  # records are not kept
            count += 1
        peak = tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()
    assert count == reader.report.records == reader.report.rows == 100_000
    # Holding the records takes about 83 MiB at this size (measured with tracemalloc); the reader
    # keeps only the ids (for duplicate detection) and one row at a time: about 13 MiB.
    assert peak < 24 * 2**20, f"peak {peak / 2**20:.1f} MiB"


def test_one_megabyte_sentence(tmp_path):
    filler = "가나다라마바사 " * 130_000  # ~1 MB of characters
    sentence = filler + "비틀즈와 조지 해리슨"
    start = len(filler)
    subject = Entity("비틀즈", start, start + 3, "ORG")
    obj = Entity("조지 해리슨", start + 5, start + 11, "PER")
    records = [Record("0", sentence, subject, obj, "per:colleagues"), Record("1", "짧은 문장 비틀즈", Entity("비틀즈", 6, 9, "ORG"), Entity("짧은", 0, 2, "POH"))]  # noqa: E501 (Korean test data kept whole)
    from rekit.data.readers import write_csv, write_jsonl

    for name, writer in (("long.csv", write_csv), ("long.jsonl", write_jsonl)):
        writer(records, tmp_path / name)
        t0 = time.perf_counter()
        back, report = read_records(tmp_path / name)
        assert time.perf_counter() - t0 < 5
        assert back == records
    # A mismatched span in a huge sentence is repaired quickly too.
    text = (tmp_path / "long.csv").read_text(encoding="utf-8").replace(f"'start_idx': {start}, ", "'start_idx': 5, ", 1)
    (tmp_path / "long.csv").write_text(text, encoding="utf-8")
    back, report = read_records(tmp_path / "long.csv", ReadOptions(on_mismatch="repair"))
    assert back[0].subject == subject and len(report.repaired) == 1


def test_oversized_entity_cell(tmp_path):
    word = "가" * 70_000
    sentence = word + " 그리고 비틀즈"
    path = tmp_path / "huge_cell.csv"
    with open(path, "w", encoding="utf-8", newline="") as f:
        f.write("id,sentence,subject_entity,object_entity,label,source\n")
        f.write(f"0,{sentence},\"{{'word': '{word}', 'start_idx': 0, 'end_idx': 69999, 'type': 'ORG'}}\","
                f"\"{{'word': '비틀즈', 'start_idx': 70005, 'end_idx': 70007, 'type': 'ORG'}}\",no_relation,w\n")
    with pytest.raises(DataError) as info:
        read_records(path)
    assert "row 1" in str(info.value) and "the limit is 65,536" in str(info.value)


def test_unclosed_quote_at_the_end_names_its_lines(tmp_path):
    path = tmp_path / "open_quote.csv"
    path.write_text(
        "id,sentence,subject_entity,object_entity,label,source\n"
        "0,\"비틀즈 노래,\"{'word': '비틀즈', 'start_idx': 0, 'end_idx': 2, 'type': 'ORG'}\",x,y,z\n"
        "1,다음 줄,a,b,c,d\n",
        encoding="utf-8",
    )
    with pytest.raises(DataError) as info:
        read_records(path)
    assert "row 1" in str(info.value)


def test_utf16_without_bom_and_binary_garbage(tmp_path):
    path = tmp_path / "nobom.csv"
    path.write_bytes("id,sentence\n0,비틀즈\n".encode("utf-16-le"))
    with pytest.raises(DataError, match="NUL bytes"):
        read_records(path)
    path = tmp_path / "noise.json"
    path.write_bytes(bytes(range(1, 256)) * 10)
    with pytest.raises(DataError):
        read_records(path)


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(DataError, match="no such file"):
        iter_records(tmp_path / "nope.csv")
    with pytest.raises(DataError, match="not a regular file"):
        iter_records(tmp_path)
