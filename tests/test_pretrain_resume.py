"""`rekit pretrain` survives kill -9 and Ctrl-C: `--resume` finishes with exactly the weights of
an uninterrupted run (CPU, one thread), and --overwrite keeps the old encoder until the new one
is complete. Runs are children of a forkserver that imported torch and transformers once (see
test_resume.py). The tokenizer is built once and passed with --tokenizer, so every run has the
same vocabulary. Runtime: about 30 s on 2 busy CPU cores."""

import json
import multiprocessing
import os
import signal
import sys
import time
from pathlib import Path

import pytest
import torch

from rekit.cli import main
from rekit.data.readers import write_csv
from rekit.data.synthetic import make_splits
from rekit.training import checkpoint
from rekit.training.mlm import work_dir

PRELOAD = ["torch", "transformers", "transformers.models.bert.modeling_bert", "rekit.cli",
           "rekit.commands.pretrain", "rekit.training.pretrain", "rekit.data.readers"]


def _child(argv: list[str], log_path: str) -> None:
    torch.set_num_threads(1)
    fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    sys.exit(main(argv))


@pytest.fixture(scope="module")
def spawner():
    for k, v in {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false",
                 "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}.items():
        os.environ.setdefault(k, v)
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(PRELOAD)

    def start(argv, log: Path):
        proc = ctx.Process(target=_child, args=([str(a) for a in argv], str(log)))
        proc.start()
        return proc

    return start


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    from rekit.modeling.scratch import train_tokenizer

    d = tmp_path_factory.mktemp("pretrain_resume")
    train, _ = make_splits(seed=5, n_train=240, n_test=0)
    write_csv(train, d / "train.csv")
    train_tokenizer([r.sentence for r in train], 900).save_pretrained(d / "tok")
    return d


def args(work: Path, out: Path) -> list:
    return ["pretrain", "--train", work / "train.csv", "--output", out, "--tokenizer", work / "tok",
            "--scratch-size", "tiny", "--epochs", "3", "--batch-size", "16", "--max-length", "48",
            "--save-every", "1", "--seed", "3", "--device", "cpu", "--no-progress"]


@pytest.fixture(scope="module")
def reference(work, spawner):
    out = work / "reference"
    proc = spawner(args(work, out), work / "reference.log")
    proc.join(120)
    assert proc.exitcode == 0, (work / "reference.log").read_text()
    return out


def saved_step(out: Path):
    try:
        return checkpoint.saved_step(work_dir(out))
    except Exception:  # noqa: BLE001 - the child is replacing it right now
        return "busy"


def wait_until(cond, timeout: float) -> bool:
    end = time.time() + timeout
    while time.time() < end:
        if cond():
            return True
        time.sleep(0.02)
    return False


def assert_same_encoder(a: Path, b: Path) -> None:
    from safetensors.torch import load_file

    wa, wb = load_file(str(a / "model.safetensors")), load_file(str(b / "model.safetensors"))
    assert wa.keys() == wb.keys()
    for name in wa:
        assert torch.equal(wa[name], wb[name]), name
    rows = [[{k: v for k, v in json.loads(x).items() if k != "time"} for x in (d / "pretrain.jsonl").open()]
            for d in (a, b)]
    assert rows[0] == rows[1] and [r["epoch"] for r in rows[0]] == [1, 2, 3]
    assert not work_dir(b).exists(), "the work directory is removed once the encoder is in place"


def test_sigkill_then_resume_gives_the_uninterrupted_encoder(work, spawner, reference, tmp_path):
    out, log = tmp_path / "enc", tmp_path / "run.log"
    landed = []
    for attempt, delay in enumerate((0.1, 0.5)):
        before = saved_step(out)
        argv = args(work, out) if attempt == 0 else ["pretrain", "--resume", out, "--no-progress"]
        proc = spawner(argv, log)
        wait_until(lambda: proc.exitcode is not None or saved_step(out) not in (None, "busy", before), 60)
        time.sleep(delay)
        if proc.exitcode is None:
            proc.kill()  # SIGKILL: no handler runs
            landed.append(saved_step(out))
        proc.join(30)
    assert landed, "the kills should land during pretraining"
    assert not out.exists()  # nothing half-written where the encoder goes
    proc = spawner(["pretrain", "--resume", out, "--no-progress"], log)
    proc.join(120)
    assert proc.exitcode == 0, log.read_text()
    assert "pretrain: resuming at step" in log.read_text()
    assert_same_encoder(reference, out)


def test_ctrl_c_saves_the_state_keeps_the_old_encoder_and_resumes(work, spawner, reference, tmp_path, capsys):
    out, log = tmp_path / "enc", tmp_path / "run.log"
    out.mkdir()
    (out / "old.txt").write_text("the previous encoder")
    proc = spawner([*args(work, out), "--overwrite"], log)
    assert wait_until(lambda: proc.exitcode is not None or saved_step(out) not in (None, "busy"), 60)
    os.kill(proc.pid, signal.SIGINT)
    proc.join(60)
    assert proc.exitcode == 130, log.read_text()
    text = log.read_text()
    assert f"rekit pretrain --resume {out}" in text and "Traceback" not in text
    assert (out / "old.txt").is_file()  # --overwrite removes nothing before the new encoder is complete
    assert saved_step(out) is not None
    # a new run into the same place neither resumes nor discards it silently
    assert main([str(a) for a in args(work, out)]) == 2
    assert "--resume" in capsys.readouterr().err

    proc = spawner(["pretrain", "--resume", out, "--no-progress"], log)
    proc.join(120)
    assert proc.exitcode == 0, log.read_text()
    assert not (out / "old.txt").exists()
    assert_same_encoder(reference, out)


def test_resume_without_an_interrupted_run_is_one_line(tmp_path, capsys):
    assert main(["pretrain", "--resume", str(tmp_path / "nothing")]) == 2
    err = capsys.readouterr().err
    assert "no interrupted pretraining" in err and "Traceback" not in err
