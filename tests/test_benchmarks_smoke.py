"""The speed benchmarks' CPU smoke modes: every system runs and reports sane numbers."""

import json
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCH))


@pytest.fixture(autouse=True)
def _no_accelerate_skip():
    pytest.importorskip("accelerate", reason="HF Trainer rows need accelerate (the test extra installs it)")


def test_throughput_smoke(tmp_path):
    import throughput

    results = throughput.main(["--out", str(tmp_path), "--smoke", "--rekit-compile", "off"])
    by = {r["system"]: r for r in results}
    assert set(by) >= {"hf_community", "hf_tuned", "eager", "rekit (off)"}
    for name in ("hf_community", "hf_tuned", "eager", "rekit (off)"):
        assert "error" not in by[name], by[name]
        assert by[name]["samples_per_s"] > 0 and by[name]["loss_last"] > 0
    assert any(k.startswith("inference") and v["samples_per_s"] > 0 for k, v in by.items())
    saved = json.loads((tmp_path / "throughput.json").read_text())
    assert saved["meta"]["shape"] == "tiny" and len(saved["results"]) == len(results)
    assert "| rekit (off) |" in (tmp_path / "throughput.md").read_text()


def test_step_profile_smoke(tmp_path):
    import step_profile

    out = step_profile.main(["--out", str(tmp_path), "--smoke"])
    # graphs: eager on CPU; one variant forces an attention kernel and the unfolded clipping, the
    # last runs under DDP over a one-process (gloo) group
    assert [r["variant"] for r in out] == ["eager-static", "eager-varied", "graphs-static",
                                           "eager-static+sdpa=math+clip=separate", "eager-static+ddp=1"]
    assert all("error" not in r and r["ms_per_step"] > 0 and r["cpu_op_ms_per_step"] > 0 for r in out)
    assert "aten::" in (tmp_path / "step_profile.md").read_text()


def test_scaling_smoke(tmp_path):
    """Two real `rekit train` commands: one process, then two fold-parallel gloo processes."""
    import scaling

    results = scaling.main(["--out", str(tmp_path), "--smoke", "--only", "1gpu,folds", "--compile", "off"])
    assert [r["name"] for r in results] == ["1gpu (off)", "folds-2 (off)"]
    assert all("error" not in r and r["samples_per_s"] > 0 for r in results)
    # Both runs train the same folds from the same model directory: the same CV score.
    assert results[0]["cv_micro_f1"] == results[1]["cv_micro_f1"]
    md = (tmp_path / "scaling.md").read_text()
    assert "| folds-2 (off) |" in md and "%" in md


def test_pretrain_throughput_smoke(tmp_path):
    import pretrain_throughput

    assert pretrain_throughput.main(["--out", str(tmp_path), "--smoke"]) == 0
    rows = json.loads((tmp_path / "pretrain_throughput.json").read_text())["rows"]
    assert [(r["size"], r["head"]) for r in rows] == [("tiny", "masked"), ("tiny", "all")]
    for row in rows:
        assert row["samples_per_s"] > 0 and row["final_loss"] > 0
        assert row["host_ms"] > 0 and row["host_rowloop_ms"] > 0 and row["gpu_ms"] > 0


@pytest.mark.parametrize(("first_segment", "max_length"), [("none", 40), ("entities", 64)])
def test_encode_speed_checks_both_paths_give_the_same_features(tmp_path, first_segment, max_length):
    import encode_speed
    from rekit.data.readers import write_csv
    from rekit.data.synthetic import make_splits
    from rekit.encoding.markers import new_tokens
    from rekit.modeling import scratch

    train, _ = make_splits(seed=5, n_train=300, n_test=5)
    write_csv(train, tmp_path / "rows.csv")
    marker = "typed_entity_marker_punct"
    tok = scratch.train_tokenizer([r.sentence for r in train], 600, new_tokens(marker, ["ORG", "PER", "DAT", "LOC"]))
    tok.save_pretrained(tmp_path / "model")
    (tmp_path / "model" / "rekit.json").write_text(json.dumps(
        {"marker": marker, "max_length": max_length, "first_segment": first_segment}))  # short: some rows are windowed
    assert encode_speed.main(["--model", str(tmp_path / "model"), "--input", str(tmp_path / "rows.csv"),
                              "--repeats", "1", "--out", str(tmp_path / "r.json")]) == 0
    result = json.loads((tmp_path / "r.json").read_text())
    assert result["identical_features"] is True and result["rows"] == 300 and result["rekit_rows_per_s"] > 0


def test_pretrain_sweep_smoke(tmp_path):
    # one setting of the recipe's pretraining, changed, at a tiny scale: steps and held-out perplexity reported
    import pretrain_sweep

    out = tmp_path / "ps"
    assert pretrain_sweep.main(["--out", str(out), "--smoke", "--minutes", "0.05", "--settings", "batch_size=16"]) == 0
    result = json.loads((out / "pretrain_sweep.json").read_text())
    (row,) = result["rows"]
    assert row["setting"] == {"batch_size": "16"} and "--batch-size 16" in row["cmd"]
    assert row["steps"] > 0 and row["sentences"] == 16 * row["steps"] and row["perplexity"] > 1
    assert "| batch_size 16 |" in (out / "pretrain_sweep.md").read_text()
