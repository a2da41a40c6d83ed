"""--concurrent-folds: folds that train at the same time give exactly what they give one after
another (CPU, --deterministic: the host RNG is swapped per fold), their steps interleave, and a
stop saves every fold of the group so that --resume ends where the uninterrupted run ends."""

import json
import os
import signal

import pytest
import torch

from conftest import make_tiny_bert_work
from rekit import rundir
from rekit.cli import main
from rekit.training import concurrent

ARGS = ["--folds", "3", "--max-length", "48", "--epochs", "2", "--lr", "1e-3", "--batch-size", "16",
        "--eval-every", "4", "--save-every", "2", "--deterministic", "--device", "cpu", "--no-progress"]


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    torch.set_num_threads(1)
    return make_tiny_bert_work(tmp_path_factory.mktemp("concurrent"), seed=3)


def train(work, out, *extra) -> int:
    return main(["train", "--train", str(work / "train.csv"), "--model", str(work / "tinybert"), "--output", str(out),
                 *ARGS, *extra])


def rows(run) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def per_fold(run) -> dict:
    out: dict = {}
    for r in rows(run):
        out.setdefault(r["fold"], []).append((r["step"], r["train_loss"], r["valid_loss"], r["micro_f1"]))
    return out


@pytest.fixture(scope="module")
def sequential(work):
    out = work / "sequential"
    assert train(work, out, "--concurrent-folds", "1") == 0
    return out


def test_concurrent_folds_match_sequential_and_interleave(work, sequential, capsys):
    out = work / "together"
    assert train(work, out, "--concurrent-folds", "2") == 0
    assert "2 folds train at the same time" in capsys.readouterr().out
    assert per_fold(out) == per_fold(sequential)  # same steps, losses and scores, bit for bit
    assert (out / "oof.csv").read_text() == (sequential / "oof.csv").read_text()
    s1, s2 = (json.loads((d / "summary.json").read_text()) for d in (out, sequential))
    assert s1["cv"] == s2["cv"]
    order = [r["fold"] for r in rows(out)]
    first_of_fold1 = order.index(1)
    assert first_of_fold1 < len(order) - order[::-1].index(0) - 1, order  # fold 1 evaluated while fold 0 trained
    assert order[-1] == 2  # fold 3 in a second group after the first two


def test_a_stop_saves_every_fold_and_resume_finishes_the_same(work, sequential):
    out = work / "stopped"

    def stop_once(fold, row, fired=[]):  # noqa: B006 (a one-shot flag)
        if fold == 1 and not fired:
            fired.append(True)
            os.kill(os.getpid(), signal.SIGINT)

    from rekit.config import RunConfig
    from rekit.training.cv import train_cv

    cfg = RunConfig.from_dict({}, {"train": str(work / "train.csv"), "model": str(work / "tinybert"),
                                   "output": str(out), "folds": 3, "max_length": 48, "epochs": 2, "lr": 1e-3,
                                   "batch_size": 16, "eval_every": 4, "save_every": 2, "deterministic": True,
                                   "device": "cpu", "progress": False, "concurrent_folds": "2"})
    with pytest.raises(KeyboardInterrupt):
        train_cv(cfg, echo=lambda *a, **k: None, callbacks=[stop_once])
    assert rundir.read_state(out)["status"] == "interrupted"
    for k in (0, 1):  # both folds of the group saved their state
        assert (out / f"fold-{k}" / "train_state.json").is_file()
    assert main(["train", "--resume", str(out), "--no-progress"]) == 0
    assert per_fold(out) == per_fold(sequential)


def test_plan():
    cpu = torch.device("cpu")
    assert concurrent.plan("auto", cpu, 5, 10**9, ddp=False) == (1, "")
    assert concurrent.plan("3", cpu, 2, None, ddp=False) == (2, "")
    n, why = concurrent.plan("4", cpu, 5, None, ddp=True)
    assert n == 1 and "ddp" in why
    assert concurrent.groups([0, 1, 2, 3, 4], 2) == [[0, 1], [2, 3], [4]]
    assert concurrent.activation_bytes(32, 128, 1024, 24, 16) == 24 * (34 * 128 * 32 * 1024 + 5 * 16 * 128 * 128 * 32)
