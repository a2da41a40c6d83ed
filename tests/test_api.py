"""The public Python API: rekit.train / rekit.load, README snippets, HF-loadable folds, model cards."""

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from safetensors.torch import load_file, save_file

import rekit
from rekit.cli import main
from rekit.data.readers import read_records, write_csv, write_jsonl
from rekit.data.synthetic import make_splits
from rekit.errors import DataError
from rekit.modeling.model import REModel

ROOT = Path(__file__).resolve().parents[1]
TINY = dict(scratch_size="tiny", scratch_vocab_size=1500, max_length=64, epochs=1, batch_size=32, device="cpu")
EXAMPLE = {"sentence": "한결자동차는 1965년 8월 16일에 설립되었다.",
           "subject": {"text": "한결자동차", "start": 0, "end": 5, "type": "ORG"},
           "object": {"text": "1965년 8월 16일", "start": 7, "end": 19, "type": "DAT"}}


@pytest.fixture(scope="module")
def api_run(tmp_path_factory):
    d = tmp_path_factory.mktemp("api")
    train, test = make_splits(seed=3, n_train=160, n_test=30)
    result = rekit.train(train=train, output=d / "run", folds=2, **TINY)  # in-memory records
    return d, result, test


def test_import_rekit_does_not_import_torch():
    code = "import sys, rekit; rekit.train; rekit.load; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT, env={"PYTHONPATH": str(ROOT / "src")})


def test_train_returns_scores_folds_and_paths(api_run):
    d, result, _ = api_run
    assert result.status == "finished" and result.output == d / "run"
    assert set(result.cv) >= {"micro_f1", "auprc", "accuracy"} and len(result.folds) == 2
    assert [p.name for p in result.fold_dirs] == ["fold-0", "fold-1"] and result.oof_path.is_file()
    assert result.summary == json.loads(result.summary_path.read_text())
    assert result.labels == json.loads((d / "run" / "labels.json").read_text())["labels"]


def test_train_refuses_unlabeled_records(tmp_path):
    _, test = make_splits(seed=3, n_train=10, n_test=5)
    unlabeled = [r.__class__(r.id, r.sentence, r.subject, r.object, None) for r in test]
    with pytest.raises(DataError, match="no label"):
        rekit.train(train=unlabeled, output=tmp_path / "run", folds=2, **TINY)


def test_predict_dicts_records_and_files_agree(api_run):
    d, result, test = api_run
    model = rekit.load(result.output, device="cpu")
    dicts = [r.to_dict() for r in test]
    probs = model.predict_proba(dicts)
    assert probs.shape == (len(test), len(model.labels)) and probs.dtype == np.float32
    np.testing.assert_allclose(probs.sum(1), 1, atol=1e-5)
    np.testing.assert_array_equal(probs, model.predict_proba(test))
    assert model.predict(dicts) == [model.labels[k] for k in probs.argmax(1)]
    # A fold directory alone, and the CLI on the same rows: the same ensemble arithmetic.
    assert rekit.load(result.output / "fold-0", device="cpu").predict_proba(test).shape == probs.shape
    write_jsonl(test, d / "test.jsonl")
    assert main(["predict", str(result.output), "--input", str(d / "test.jsonl"), "--output", str(d / "p.jsonl"),
                 "--device", "cpu"]) == 0
    cli = np.asarray([json.loads(line)["probs"] for line in (d / "p.jsonl").read_text().splitlines()])
    np.testing.assert_allclose(cli, probs, atol=1e-5)


BAD = [  # (how to break EXAMPLE, the problem the readers report)
    (lambda e: {**e, "subject": {**e["subject"], "end": 99}}, "subject span 0..99 runs past the end of the sentence"),
    (lambda e: {k: v for k, v in e.items() if k != "sentence"}, "has no sentence key"),
    (lambda e: {**e, "object": {**e["object"], "text": "1966년"}}, "object span 7..19 is '1965년 8월 16일', expected '1966년'"),
    (lambda e: {**e, "object": {k: v for k, v in e["object"].items() if k != "start"}}, "object entity has no start key"),
]


@pytest.mark.parametrize("breaker,problem", BAD)
def test_bad_examples_get_the_readers_one_line_errors(api_run, tmp_path, capsys, breaker, problem):
    _, result, _ = api_run
    model = rekit.load(result.output, device="cpu")
    bad = breaker(EXAMPLE)
    with pytest.raises(DataError) as e:
        model.predict([EXAMPLE, bad])
    assert str(e.value).startswith("examples[1]: ") and problem in str(e.value) and "\n" not in str(e.value)
    # The same example in a JSON Lines file, through the CLI with --strict (by default `rekit predict`
    # still predicts such a row, repaired or clamped, and lists it in its read report): the same
    # problem, one line, exit 2.
    (tmp_path / "bad.jsonl").write_text(json.dumps({"id": "x", **bad}, ensure_ascii=False) + "\n", encoding="utf-8")
    assert main(["predict", str(result.output), "--input", str(tmp_path / "bad.jsonl"), "--output",
                 str(tmp_path / "p.csv"), "--device", "cpu", "--strict"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("rekit: error: ") and problem in err and "\n" not in err


def test_unknown_entity_type_and_wrong_container(api_run):
    _, result, _ = api_run
    model = rekit.load(result.output, device="cpu")
    with pytest.raises(DataError, match=r"examples\[0\]: object type 'XYZ' is not an entity type the model was trained on"):
        model.predict([{**EXAMPLE, "object": {**EXAMPLE["object"], "type": "XYZ"}}])
    with pytest.raises(DataError, match="a list of examples, not a single one"):
        model.predict(EXAMPLE)
    assert model.predict([]) == [] and model.predict_proba([]).shape == (0, len(model.labels))


def test_dataframe_in_the_community_layout(api_run, tmp_path):
    pd = pytest.importorskip("pandas")
    _, result, test = api_run
    write_csv(test, tmp_path / "t.csv")
    model = rekit.load(result.output, device="cpu")
    np.testing.assert_allclose(model.predict_proba(pd.read_csv(tmp_path / "t.csv")), model.predict_proba(test), atol=1e-6)


def test_fold_directory_loads_with_transformers(api_run):
    from transformers import AutoModel, AutoTokenizer

    _, result, test = api_run
    fold = result.output / "fold-0"
    ours, tok, _ = REModel.load(fold)
    hf, hf_tok = AutoModel.from_pretrained(fold).eval(), AutoTokenizer.from_pretrained(fold)
    batch = hf_tok([r.sentence for r in test[:4]], padding=True, return_tensors="pt")
    assert batch["input_ids"].tolist() == tok([r.sentence for r in test[:4]], padding=True)["input_ids"]
    with torch.no_grad():
        a = hf(**batch).last_hidden_state
        b = ours.encoder(**batch).last_hidden_state
    torch.testing.assert_close(a, b, rtol=0, atol=1e-6)
    assert a.abs().max() > 0  # and a random encoder would differ: check one trained weight
    head = load_file(str(fold / "head.safetensors"))
    assert set(head) == {"dense.weight", "dense.bias", "out.weight", "out.bias"}
    torch.testing.assert_close(head["out.weight"], ours.head.out.weight.detach())


def test_old_layout_runs_still_load(api_run, tmp_path):
    """A fold saved before head.safetensors: every weight, prefixed, in model.safetensors."""
    import shutil

    _, result, test = api_run
    old = tmp_path / "old"
    shutil.copytree(result.output, old)
    for fold in old.glob("fold-*"):
        model, _, _ = REModel.load(fold)
        (fold / "head.safetensors").unlink()
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(fold / "model.safetensors"))
        assert any(k.startswith("encoder.") for k in load_file(str(fold / "model.safetensors")))
    new_p = rekit.load(result.output, device="cpu").predict_proba(test)
    np.testing.assert_array_equal(rekit.load(old, device="cpu").predict_proba(test), new_p)


def test_model_cards(api_run, tmp_path):
    _, result, _ = api_run
    run_card = (result.output / "README.md").read_text(encoding="utf-8")
    meta = yaml.safe_load(run_card.split("---\n")[1])
    assert meta["labels"] == result.labels and "rekit" in meta["tags"] and "base_model" not in meta  # scratch
    assert f"micro-F1 (no_relation excluded) {result.cv['micro_f1']:.2f}" in run_card
    assert "typed_entity_marker_punct" in run_card and "in-memory records" in run_card
    fold_card = (result.output / "fold-1" / "README.md").read_text(encoding="utf-8")
    best = result.folds[1]["best"]
    assert f"micro-F1 (no_relation excluded) {best['micro_f1']:.2f}" in fold_card
    assert "AutoModel.from_pretrained" in fold_card and "head.safetensors" in fold_card


def readme_blocks(section: str) -> list[str]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    body = text.split(f"## {section}\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", body, flags=re.DOTALL)


def test_readme_python_api_snippets_run(tmp_path):
    blocks = readme_blocks("Python API")
    assert len(blocks) == 2  # train from Python, predict from Python
    train, _ = make_splits(seed=5, n_train=200, n_test=20)
    write_csv(train, tmp_path / "train.csv")
    for i, code in enumerate(blocks):
        (tmp_path / f"snippet{i}.py").write_text(code, encoding="utf-8")
        done = subprocess.run([sys.executable, f"snippet{i}.py"], cwd=tmp_path, capture_output=True, text=True,
                              env={"PYTHONPATH": str(ROOT / "src"), "HF_HUB_OFFLINE": "1"})
        assert done.returncode == 0, done.stderr[-3000:]
    assert (tmp_path / "runs" / "api" / "summary.json").is_file()
    card = (tmp_path / "runs" / "api" / "README.md").read_text(encoding="utf-8")
    assert "`train.csv`, sha256 " in card  # trained from a file: its name and hash
    assert read_records(tmp_path / "train.csv")[1].records == 200
