"""Resume: kill a tiny 2-fold run at random points, `--resume` it, get exactly the uninterrupted results.

The runs use a local tiny BERT directory, not `--model scratch`: the scratch WordPiece trainer
breaks frequency ties arbitrarily, so two fresh scratch runs already differ in their vocabulary.
Every run is a child process started from a multiprocessing forkserver that imported rekit,
torch and transformers once (a plain `python -m rekit.cli` spends most of this tiny run
importing), with one CPU thread, so the reference and the resumed runs compute identically.
Runtime: about 40 s on 2 busy CPU cores (the SIGKILL test about 30 s of it, with the reference run).
"""

import json
import multiprocessing
import os
import random
import re
import signal
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import make_tiny_bert_work
from rekit import rundir
from rekit.cli import main
from rekit.training import checkpoint

TRAIN = ["--folds", "2", "--max-length", "48", "--epochs", "3", "--lr", "1e-3", "--batch-size", "16",
         "--eval-every", "3", "--save-every", "1", "--deterministic", "--device", "cpu", "--no-progress"]
PRELOAD = ["torch", "sklearn.metrics", "transformers", "transformers.models.bert.modeling_bert",
           "rekit.cli", "rekit.commands.train", "rekit.training.cv", "rekit.data.readers"]


def _child(argv: list[str], log_path: str) -> None:
    """A child process: the `rekit` command on one CPU thread, its output appended to `log_path`."""
    torch.set_num_threads(1)
    fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    sys.exit(main(argv))


def _child_killed_at_fold_results(argv: list[str], log_path: str) -> None:
    """The command, killed (os._exit, no cleanup) the moment its first fold's results would be
    written: after the fold's last step, its final state and its best weights are saved."""
    from rekit import rundir as run_files

    run_files.save_fold = lambda *a, **k: os._exit(9)
    _child(argv, log_path)


@pytest.fixture(scope="module")
def spawner():
    """start(argv, log) -> a running child process (a fork of a server that preloaded the libraries)."""
    for k, v in {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false",
                 "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}.items():
        os.environ.setdefault(k, v)
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(PRELOAD)

    def start(argv, log: Path, target=_child):
        proc = ctx.Process(target=target, args=([str(a) for a in argv], str(log)))
        proc.start()
        return proc

    return start


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    """Training data and a local tiny BERT (random weights, tokenizer trained once, saved)."""
    return make_tiny_bert_work(tmp_path_factory.mktemp("resume"), seed=1)


def train_args(work: Path, out: Path) -> list:
    return ["train", "--train", work / "train.csv", "--model", work / "tinybert", "--output", out, *TRAIN]


@pytest.fixture(scope="module")
def reference(work, spawner):
    out = work / "reference"
    proc = spawner(train_args(work, out), work / "reference.log")
    proc.join(120)
    assert proc.exitcode == 0, (work / "reference.log").read_text()
    return out


def saved_step(fold_dir: Path):
    try:
        return checkpoint.saved_step(fold_dir)
    except Exception:  # noqa: BLE001 - the child is replacing or removing it right now
        return "busy"


def progress(run: Path) -> tuple:
    """Folds done and the steps of saved training states: grows as training advances."""
    return tuple((d.name, (d / rundir.RESULT).is_file(), saved_step(d)) for d in sorted(run.glob("fold-*")))


def wait_until(cond, timeout: float) -> bool:
    end = time.time() + timeout
    while time.time() < end:
        if cond():
            return True
        time.sleep(0.02)
    return False


def assert_same_run(a: Path, b: Path) -> None:
    sa, sb = (json.loads((d / "summary.json").read_text()) for d in (a, b))
    assert sa["status"] == sb["status"] == "finished"
    assert sa["cv"] == sb["cv"]
    assert [f["best"]["step"] for f in sa["folds"]] == [f["best"]["step"] for f in sb["folds"]]
    assert (a / "oof.csv").read_bytes() == (b / "oof.csv").read_bytes()
    from safetensors.torch import load_file

    for k in (0, 1):
        wa, wb = load_file(str(a / f"fold-{k}/model.safetensors")), load_file(str(b / f"fold-{k}/model.safetensors"))
        assert wa.keys() == wb.keys()
        for name in wa:
            assert torch.equal(wa[name], wb[name]), (k, name)
        assert not list((b / f"fold-{k}").glob("train_state*")), "the training state is removed once a fold is done"
    # metrics.jsonl: no duplicate rows from the replayed steps, the same values (all but wall time
    # and the throughput columns, which measure the session, not the model)
    timing = {"time", "train_seconds", "samples_per_s", "train_samples", "train_tokens"}
    rows = [[{k: v for k, v in json.loads(line).items() if k not in timing} for line in (d / "metrics.jsonl").open()]
            for d in (a, b)]
    assert rows[0] == rows[1]


def test_sigkill_at_random_points_then_resume_gives_identical_results(work, spawner, reference, tmp_path):
    rnd = random.Random(20240605)
    run, log = tmp_path / "run", tmp_path / "run.log"
    landed = []
    for attempt in range(3):
        before = progress(run) if run.exists() else ()
        argv = train_args(work, run) if attempt == 0 else ["train", "--resume", run, "--no-progress"]
        proc = spawner(argv, log)
        # Let it make new progress (a new saved state; the last time, one in the second fold), then
        # kill it a random moment later: inside a step, an evaluation, a checkpoint write, a fold's end.
        wait_until(lambda: proc.exitcode is not None or (run.exists() and progress(run) != before and (
            attempt < 2 or saved_step(run / "fold-1") not in (None, "busy"))), 60)
        time.sleep(rnd.uniform(0.0, 0.8))
        if proc.exitcode is None:
            proc.kill()  # SIGKILL: no handler runs, no file is closed cleanly
            landed.append(progress(run))
        proc.join(30)
    assert len(landed) >= 2, f"the kills should land during training: {landed}"
    print("killed at", landed)
    assert json.loads((run / "state.json").read_text())["status"] == "running"  # what a SIGKILL leaves

    proc = spawner(["train", "--resume", run, "--no-progress"], log)
    proc.join(120)
    assert proc.exitcode == 0, log.read_text()
    state = json.loads((run / "state.json").read_text())
    assert state["status"] == "finished" and state["resumed"] >= 3
    # Restarting folds from scratch would also reproduce the reference: check that saved states were
    # continued (and so that they hold everything, RNGs included, for the results to match).
    assert re.search(r"resuming at step [1-9]", log.read_text()), log.read_text()
    assert "fold 1/2: done in an earlier session, kept" in log.read_text()  # not trained again
    assert_same_run(reference, run)


def test_a_kill_after_the_last_step_resumes_from_the_final_state(work, spawner, reference, tmp_path):
    # The state saved after a fold's last step holds the result but neither the model (its best
    # weights are on disk, written once) nor the optimizer's moments: no step is left to take. A
    # resume finishes the fold from it, not from scratch, with the same best weights.
    run, log = tmp_path / "run", tmp_path / "run.log"
    proc = spawner(train_args(work, run), log, target=_child_killed_at_fold_results)
    proc.join(120)
    assert proc.exitcode == 9, log.read_text()
    saved = checkpoint.load_state(run / "fold-0")
    assert saved is not None and saved["progress"]["step"] == saved["shape"]["total_steps"]
    assert saved["optimizer"] is None and saved["scheduler"] is None and saved["model"] is None
    proc = spawner(["train", "--resume", run, "--no-progress"], log)
    proc.join(120)
    assert proc.exitcode == 0, log.read_text()
    assert re.search(r"fold 1/2: resuming at step (\d+)/\1 ", log.read_text()), log.read_text()
    assert_same_run(reference, run)


def test_ctrl_c_saves_the_state_and_says_how_to_resume(work, spawner, reference, tmp_path):
    run, log = tmp_path / "run", tmp_path / "run.log"
    proc = spawner(train_args(work, run), log)
    assert wait_until(lambda: proc.exitcode is not None or saved_step(run / "fold-0") not in (None, "busy"), 60)
    os.kill(proc.pid, signal.SIGINT)
    proc.join(60)
    assert proc.exitcode == 130, log.read_text()
    text = log.read_text()
    assert f"rekit train --resume {run}" in text and "Traceback" not in text
    state = json.loads((run / "state.json").read_text())
    assert state["status"] == "interrupted" and "the training state is saved" in state["reason"]
    assert checkpoint.saved_step(run / "fold-0") is not None or (run / "fold-0" / rundir.RESULT).is_file()

    proc = spawner(["train", "--resume", run, "--no-progress"], log)
    proc.join(120)
    assert proc.exitcode == 0, log.read_text()
    assert_same_run(reference, run)
    # resuming a finished run is a no-op that says so
    assert main(["train", "--resume", str(run), "--no-progress"]) == 0


def test_resume_refuses_changed_settings_and_non_runs(reference, tmp_path, capsys):
    assert main(["train", "--resume", str(reference), "--lr", "0.1"]) == 2
    err = capsys.readouterr().err
    assert "--lr cannot change" in err and "Traceback" not in err
    assert main(["train", "--resume", str(tmp_path)]) == 2
    assert "not a rekit run directory" in capsys.readouterr().err
    # a config that allows model code needs the flag again, explicitly
    run = tmp_path / "copy"
    run.mkdir()
    text = (reference / "config.yaml").read_text().replace("trust_remote_code: false", "trust_remote_code: true")
    (run / "config.yaml").write_text(text)
    assert main(["train", "--resume", str(run)]) == 2
    assert "--trust-remote-code" in capsys.readouterr().err


def test_resume_accepts_flags_that_change_how_not_what(reference):
    from rekit.cli import build_parser
    from rekit.commands.train import resume_config

    args = build_parser().parse_args(["train", "--resume", str(reference), "--grad-accum", "2", "--oom-retry",
                                      "--device", "cpu", "--no-progress"])
    cfg = resume_config(args)
    assert (cfg.train.grad_accum, cfg.train.oom_retry, cfg.train.progress) == (2, True, False)
    assert cfg.train.lr == 1e-3 and cfg.train.epochs == 3 and cfg.train.output == str(reference)


def test_resume_refuses_a_changed_training_file(work, tmp_path, capsys):
    data = tmp_path / "train.csv"
    data.write_bytes((work / "train.csv").read_bytes())
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text(f"data:\n  train: {data}\ntrain:\n  output: {run}\n")
    rundir.write_state(run, "interrupted", data_sha256=rundir.file_digest(data))
    with data.open("a") as f:
        f.write("extra line\n")
    assert main(["train", "--resume", str(run), "--no-progress"]) == 2
    assert "changed since" in capsys.readouterr().err


# -- the training-state file format --------------------------------------------------------------
def test_training_state_round_trips_optimizer_rng_and_shared_tensors(tmp_path):
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Linear(3, 2))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0 / (s + 1))
    for _ in range(2):
        model(torch.randn(5, 4)).sum().backward()
        opt.step()
        sched.step()
    w = model[0].weight
    state = {"model": model.state_dict(), "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
             "rng": checkpoint.capture_rng(), "probs": np.arange(6, dtype=np.float32).reshape(2, 3),
             "tied": {"a": w, "b": w, "view": w[0]}, "score": float("-inf"), "pair": (1, [2, 3])}
    checkpoint.save_state(tmp_path, 7, state)
    expected_torch, expected_np = torch.rand(3), np.random.rand(3)
    loaded = checkpoint.load_state(tmp_path)
    assert checkpoint.saved_step(tmp_path) == 7
    assert loaded["pair"] == (1, [2, 3]) and loaded["score"] == float("-inf")
    np.testing.assert_array_equal(loaded["probs"], state["probs"])
    assert torch.equal(loaded["tied"]["view"], w[0]) and torch.equal(loaded["tied"]["a"], w)
    # the optimizer's integer-keyed state and tuples come back in a form torch accepts
    opt2 = torch.optim.AdamW(model.parameters(), lr=1e-2)
    opt2.load_state_dict(loaded["optimizer"])
    assert opt2.param_groups[0]["betas"] == (0.9, 0.999)
    for p in model.parameters():
        assert torch.equal(opt2.state[p]["exp_avg"], opt.state[p]["exp_avg"])
    sched2 = torch.optim.lr_scheduler.LambdaLR(opt2, lambda s: 1.0 / (s + 1))
    sched2.load_state_dict(loaded["scheduler"])
    assert sched2.last_epoch == 2
    # RNGs continue exactly where they were captured
    checkpoint.restore_rng(loaded["rng"])
    assert torch.equal(torch.rand(3), expected_torch)
    np.testing.assert_array_equal(np.random.rand(3), expected_np)
    # a newer save replaces the tensors file; clearing removes everything
    checkpoint.save_state(tmp_path, 8, {"x": torch.ones(2)})
    assert [p.name for p in tmp_path.glob("train_state-*")] == ["train_state-00000008.safetensors"]
    checkpoint.clear_state(tmp_path)
    assert checkpoint.load_state(tmp_path) is None and not list(tmp_path.glob("train_state*"))


def test_training_state_refuses_foreign_files(tmp_path):
    (tmp_path / checkpoint.STATE_FILE).write_text(json.dumps(
        {"format": checkpoint.FORMAT, "step": 1, "tensors": "../../etc/passwd", "state": {}}))
    with pytest.raises(Exception, match="unexpected tensor file"):
        checkpoint.load_state(tmp_path)
    with pytest.raises(TypeError, match="cannot store"):
        checkpoint.save_state(tmp_path, 1, {"bad": object()})


def test_prune_metrics_drops_replayed_rows_and_a_torn_line(tmp_path):
    rows = [{"fold": 0, "step": s} for s in (3, 6)] + [{"fold": 1, "step": s} for s in (3, 6, 9)]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows) + '{"fold": 1, "st')
    assert rundir.prune_metrics(tmp_path, {1: 3}) == 3  # fold 1 resumes from step 3; fold 0 is done
    kept = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert kept == rows[:3]
    rundir.prune_metrics(tmp_path, {0: None})  # fold 0 restarts from scratch
    assert [json.loads(x)["fold"] for x in (tmp_path / "metrics.jsonl").read_text().splitlines()] == [1]
