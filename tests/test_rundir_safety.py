"""Run directories that cannot be misread (issue 13 items 2, 3, 8, 9, 11): one writer per run
(an OS lock), finished folds only, damaged model and run files refused in one line before any
prediction, output locations checked first, files that honour the umask, a mistyped --model
that leaves nothing behind.

One tiny 2-fold scratch run is trained once for the module (a few seconds on 2 CPU cores); the
damage cases work on copies of it.
"""

import errno
import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from rekit import lock
from rekit.cli import main
from rekit.config import RunConfig
from rekit.data.readers import write_csv
from rekit.data.synthetic import make_splits
from rekit.errors import RekitError
from rekit.io import OutputError, atomic_path, atomic_write_text, check_output
from rekit.training.checkpoint import FORMAT
from rekit.training.cv import train_cv

TINY = ["--model", "scratch", "--scratch-size", "tiny", "--scratch-vocab-size", "800", "--max-length", "48",
        "--folds", "2", "--epochs", "1", "--no-progress"]


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    """A finished 2-fold run (trained under umask 022) and its data."""
    d = tmp_path_factory.mktemp("safety")
    train, test = make_splits(seed=3, n_train=100, n_test=12)
    write_csv(train, d / "train.csv")
    write_csv(test, d / "test.csv")
    old = os.umask(0o022)
    try:
        flags = {"model": "scratch", "scratch_size": "tiny", "scratch_vocab_size": 800, "max_length": 48, "folds": 2,
                 "epochs": 1, "progress": False, "train": str(d / "train.csv"), "output": str(d / "run")}
        train_cv(RunConfig.from_dict({}, flags), echo=lambda *_: None)
    finally:
        os.umask(old)
    return d


def copy_run(work: Path, tmp_path: Path) -> Path:
    run = tmp_path / "run"
    shutil.copytree(work / "run", run)
    return run


def predict(run: Path, work: Path, out: Path, *extra: str) -> int:
    return main(["predict", str(run), "--input", str(work / "test.csv"), "--output", str(out), "--device", "cpu",
                 *extra])


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("rekit: error: ") and "\n" not in err, err
    return err


# -- item 2: one writer per run directory ---------------------------------------------------------
def test_second_train_on_a_run_in_use_refuses_with_the_pid_and_the_first_finishes(work, tmp_path, capsys):
    run = tmp_path / "busy"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src")}
    first = subprocess.Popen([sys.executable, "-m", "rekit.cli", "train", "--train", str(work / "train.csv"),
                              "--output", str(run), *TINY, "--epochs", "2"], env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 60
        while not lock.lock_path(run).exists() and first.poll() is None and time.time() < deadline:
            time.sleep(0.05)
        assert first.poll() is None, first.communicate()
        for extra in (["--train", str(work / "train.csv"), "--output", str(run), "--overwrite", *TINY],
                      ["--resume", str(run)]):
            assert main(["train", *extra]) == 2
            err = one_line_error(capsys)
            assert f"in use by process {first.pid}" in err and str(run) in err
        _out, err = first.communicate(timeout=300)
    finally:
        if first.poll() is None:
            first.kill()
    assert first.returncode == 0, err
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "finished" and len(summary["folds"]) == 2
    assert not lock.lock_path(run).exists()  # released and removed at the end


def test_a_lock_left_by_a_killed_process_is_taken_over(work, tmp_path, capsys):
    run = copy_run(work, tmp_path)
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from rekit import lock; "
                               "lock.acquire(sys.argv[1]); print('held', flush=True); time.sleep(120)", str(run)],
                              env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src")},
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        assert main(["train", "--resume", str(run)]) == 2
        assert f"in use by process {holder.pid}" in one_line_error(capsys)
    finally:
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait()
    assert lock.lock_path(run).read_text().split()[0] == str(holder.pid)  # the stale file is still there
    assert main(["train", "--resume", str(run)]) == 0  # the kernel released the lock: taken over
    assert "has finished already" in capsys.readouterr().out
    # and a second holder in this process is refused too (flock is per open file)
    with lock.locked(run), pytest.raises(lock.LockedError, match=f"process {os.getpid()}"):
        lock.acquire(run)


def test_pretrain_output_is_locked_and_overwrite_keeps_the_old_model_until_the_new_one_is_done(
        work, tmp_path, capsys, monkeypatch):
    out = tmp_path / "enc"
    args = ["pretrain", "--train", str(work / "train.csv"), "--output", str(out), "--tokenizer-only",
            "--scratch-vocab-size", "300"]
    assert main(args) == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    with lock.locked(out, "output directory"):
        assert main([*args, "--overwrite"]) == 2
        assert "output directory" in one_line_error(capsys)

    import rekit.modeling.scratch as scratch

    def broken(*a, **k):
        raise RekitError("simulated failure while building the new model")

    monkeypatch.setattr(scratch, "train_tokenizer", broken)
    assert main([*args, "--overwrite"]) == 2
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # the old model, untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == ["enc"]  # no staging folder, no lock file left
    monkeypatch.undo()
    # Another marker scheme: other marker tokens, so a different tokenizer.json (the vocabulary
    # itself is deterministic and, on these few rows, the same at any small size).
    assert main([*args, "--overwrite", "--marker", "entity_marker"]) == 0
    assert (out / "tokenizer.json").read_bytes() != before["tokenizer.json"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["enc"]


# -- item 3: finished folds only ------------------------------------------------------------------
def test_partial_run_is_refused_unless_allow_partial_which_names_the_folds(work, tmp_path, capsys):
    run = copy_run(work, tmp_path)
    (run / "fold-1" / "result.json").unlink()  # fold 1 never finished (its best checkpoint is there)
    out = tmp_path / "sub.csv"
    assert predict(run, work, out) == 2
    err = one_line_error(capsys)
    assert "unfinished" in err and "fold-1 not finished" in err and "--allow-partial" in err
    assert not out.exists()
    assert predict(run, work, out, "--allow-partial") == 0
    captured = capsys.readouterr()
    assert "using 1 of 2 folds (fold-0); fold-1 not finished" in captured.err
    assert "(1 fold models averaged)" in captured.out
    assert len(out.read_text().splitlines()) == 13


# -- item 8: damaged model and run files ----------------------------------------------------------
def _truncate(p: Path) -> None:
    p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])


def _bad_header(p: Path) -> None:
    p.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all" + p.read_bytes()[24:])


def _labels(delta: int):
    def change(p: Path) -> None:
        data = json.loads(p.read_text())
        data["labels"] = data["labels"][:-1] if delta < 0 else [*data["labels"], "extra:label"]
        p.write_text(json.dumps(data))
    return change


def _labels_and_spec(delta: int):  # both files agree, but the classifier's weights do not
    def change(p: Path) -> None:
        _labels(delta)(p)
        spec = json.loads((p.parent / "rekit.json").read_text())
        spec["n_labels"] += delta
        (p.parent / "rekit.json").write_text(json.dumps(spec))
    return change


def _spec_n_labels(p: Path) -> None:
    spec = json.loads(p.read_text())
    spec["n_labels"] = 99
    p.write_text(json.dumps(spec))


@pytest.mark.parametrize("name,damage,named", [
    ("fold-1/model.safetensors", _truncate, "fold-1/model.safetensors"),
    ("fold-0/model.safetensors", _bad_header, "fold-0/model.safetensors"),
    ("fold-1/labels.json", _labels(-1), "fold-1/rekit.json"),
    ("fold-1/labels.json", _labels(+1), "fold-1/labels.json"),
    ("fold-1/head.safetensors", _truncate, "fold-1/head.safetensors"),
    # the classifier's outputs live in head.safetensors (the encoder alone is in model.safetensors)
    ("fold-0/labels.json", _labels_and_spec(-1), "fold-0/head.safetensors"),
    ("fold-0/labels.json", _labels_and_spec(+1), "fold-0/head.safetensors"),
    ("fold-0/rekit.json", _spec_n_labels, "fold-0/rekit.json"),
    ("fold-0/labels.json", lambda p: p.write_text("{oops"), "fold-0/labels.json"),
    ("config.yaml", lambda p: p.write_bytes(b"train:\n  folds: \xff\xfe\n"), "run/config.yaml"),
    ("config.yaml", lambda p: p.write_text("train: [1, 2"), "run/config.yaml"),
])
def test_damaged_model_files_fail_in_one_line_naming_the_file_before_predicting(
        work, tmp_path, capsys, monkeypatch, name, damage, named):
    from rekit.ensemble import Ensemble

    run = copy_run(work, tmp_path)
    damage(run / name)
    monkeypatch.setattr(Ensemble, "predict_proba", lambda *a: pytest.fail("predicted with a damaged model"))
    out = tmp_path / "sub.csv"
    assert predict(run, work, out) == 2
    assert named in one_line_error(capsys)
    assert not out.exists()


def test_unknown_key_in_train_state_fails_the_resume_at_once(work, tmp_path, capsys):
    run = copy_run(work, tmp_path)
    record = {"format": FORMAT, "step": 3, "tensors": "train_state-00000003.safetensors", "state": {}, "sneaky": 1}
    (run / "fold-1" / "train_state.json").write_text(json.dumps(record))
    assert main(["train", "--resume", str(run)]) == 2
    err = one_line_error(capsys)
    assert "fold-1/train_state.json" in err and "unknown key(s) 'sneaky'" in err


def test_config_file_with_invalid_utf8_is_one_line(work, tmp_path, capsys):
    cfg = tmp_path / "bad.yaml"
    cfg.write_bytes(b"train:\n  lr: \xff\xfe\n")
    assert main(["train", "--config", str(cfg), "--output", str(tmp_path / "r")]) == 2
    assert f"{cfg}: not UTF-8 text" in one_line_error(capsys)
    assert not (tmp_path / "r").exists()


def test_runs_lists_unreadable_runs_and_shows_the_rest(work, tmp_path, capsys):
    good = copy_run(work, tmp_path)
    damage = {"bad-summary": ("summary.json", b"{\"cv\": [1, 2]}"), "torn-summary": ("summary.json", b"{\"cv\""),
              "bad-config": ("config.yaml", b"train: [1, 2"), "binary-config": ("config.yaml", b"\xff\xfe\x00"),
              "bad-metrics": ("metrics.jsonl", b"[1, 2]\n\"x\"\n{\"fold\": \n")}
    for name, (file, content) in damage.items():
        shutil.copytree(good, tmp_path / name)
        (tmp_path / name / file).write_bytes(content)
    assert main(["runs", str(tmp_path), "--sort", "auprc"]) == 0
    out = capsys.readouterr().out
    rows = {line.split()[0]: line.split()[1] for line in out.splitlines()[2:] if line and line.split()[0] in
            {"run", "bad-metrics", *damage}}
    assert rows["run"] == "finished" and rows["bad-metrics"] == "finished"
    for name in ("bad-summary", "torn-summary", "bad-config", "binary-config"):
        assert rows[name] == "unreadable"
    assert "unreadable torn-summary: " in out and "summary.json: malformed" in out
    assert "bad-config/config.yaml: " in out


# -- item 9: outputs --------------------------------------------------------------------------------
def test_read_only_output_folder_is_found_before_inference(work, tmp_path, capsys, monkeypatch):
    from rekit.ensemble import Ensemble

    ro = tmp_path / "ro"
    ro.mkdir()
    monkeypatch.setattr(Ensemble, "predict_proba", lambda *a: pytest.fail("predicted before checking the output"))
    if os.geteuid() == 0:  # root writes into a 0555 folder: make the file system say no instead
        import tempfile

        real = tempfile.mkstemp

        def refuse(*a, dir=None, **k):
            if Path(dir) == ro:
                raise OSError(errno.EROFS, "Read-only file system")
            return real(*a, dir=dir, **k)

        monkeypatch.setattr(tempfile, "mkstemp", refuse)
    else:
        ro.chmod(0o555)
    try:
        assert predict(work / "run", work, ro / "sub.csv") == 2
    finally:
        ro.chmod(0o755)
    err = one_line_error(capsys)
    assert f"--output {ro / 'sub.csv'}: cannot write in {ro}" in err
    assert predict(work / "run", work, tmp_path / "missing" / "sub.csv") == 2
    err = one_line_error(capsys)
    assert "folder" in err and "does not exist" in err
    assert list(ro.iterdir()) == []


def test_full_disk_is_one_line_and_keeps_the_previous_file_without_temp_files(tmp_path):
    target = tmp_path / "sub.csv"
    target.write_text("previous\n")
    with pytest.raises(OutputError, match=f"cannot write {target}: the disk is full"), atomic_path(target) as tmp:
        tmp.write_text("half of the new")
        raise OSError(errno.ENOSPC, "No space left on device")
    assert target.read_text() == "previous\n"
    assert [p.name for p in tmp_path.iterdir()] == ["sub.csv"]
    with pytest.raises(OutputError, match="bytes free"):
        check_output(target, need_bytes=1 << 62)


def test_files_honour_the_umask(work, tmp_path):
    old = os.umask(0o022)
    try:
        atomic_write_text(tmp_path / "a.txt", "x")
        assert stat.S_IMODE((tmp_path / "a.txt").stat().st_mode) == 0o644
        os.umask(0o002)
        atomic_write_text(tmp_path / "b.txt", "x")
        assert stat.S_IMODE((tmp_path / "b.txt").stat().st_mode) == 0o664
    finally:
        os.umask(old)
    run = work / "run"  # trained under umask 022: every file readable by the group and others
    modes = {str(p.relative_to(run)): stat.S_IMODE(p.stat().st_mode) for p in run.rglob("*") if p.is_file()}
    assert {"fold-0/model.safetensors", "summary.json", "oof.csv", "state.json"} <= set(modes)
    assert {m for m in modes.values()} == {0o644}, modes


# -- item 11: --model checked before the run directory is created ---------------------------------
def _pickle_only(d: Path) -> str:
    d.mkdir()
    (d / "config.json").write_text(json.dumps({"model_type": "bert"}))
    (d / "pytorch_model.bin").write_bytes(b"\x80\x04not really a pickle")
    return str(d)


def _loop(d: Path) -> str:
    os.symlink(d, d)
    return str(d)


def _broken_link(d: Path) -> str:
    os.symlink(d.parent / "nowhere", d)
    return str(d)


@pytest.mark.parametrize("make,says", [
    (lambda d: str(d / "no-such-model"), "no such directory"),
    (lambda d: "klue/roberta-lage", "hub is not reachable"),
    (lambda d: "not a name!", "neither a local model directory nor a Hugging Face hub name"),
    (_pickle_only, "pytorch_model.bin (pickle)"),
    (_loop, "symbolic link loop"),
    (_broken_link, "broken symbolic link"),
])
def test_a_mistyped_model_fails_at_once_and_leaves_no_run_directory(work, tmp_path, capsys, monkeypatch, make, says):
    from rekit.modeling import backbone

    model = make(tmp_path / "m")
    if "/" in model and not model.startswith("/"):
        monkeypatch.setattr(backbone, "hub_reachable", lambda *a, **k: False)
    else:
        monkeypatch.setattr(backbone, "hub_reachable", lambda *a, **k: pytest.fail("a local path went to the hub"))
    run = tmp_path / "run"
    start = time.perf_counter()
    assert main(["train", "--train", str(work / "train.csv"), "--output", str(run), *TINY, "--model", model]) == 2
    assert time.perf_counter() - start < 1.0
    assert says in one_line_error(capsys)
    assert not run.exists() and not lock.lock_path(run).exists()
