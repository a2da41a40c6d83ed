"""Several processes through torchrun (gloo on CPU here; NCCL on GPUs): fold-parallel and DDP
give the same results as one process."""

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import free_port, make_tiny_bert_work
from rekit.cli import main

pytestmark = pytest.mark.skipif(shutil.which("torchrun") is None, reason="torchrun not on PATH")

# Dropout off: under DDP each process draws its own masks, so only a dropout-free run can match
# one process bit for bit (up to float summation order).
ARGS = ["--folds", "2", "--epochs", "2", "--batch-size", "16", "--lr", "1e-3", "--dropout", "0",
        "--max-length", "64", "--deterministic", "--no-progress", "--save-every", "-1"]


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    d = make_tiny_bert_work(tmp_path_factory.mktemp("dist"), seed=3)
    torch.set_num_threads(1)  # same reduction order as the single-threaded torchrun workers
    try:
        assert main(["train", "--train", str(d / "train.csv"), "--model", str(d / "tinybert"),
                     "--output", str(d / "single"), *ARGS]) == 0
    finally:
        torch.set_num_threads(os.cpu_count() or 1)
    return d


def torchrun(work, out, parallel):
    cmd = ["torchrun", "--standalone", "--nproc-per-node", "2", "-m", "rekit.cli", "train",
           "--train", str(work / "train.csv"), "--model", str(work / "tinybert"), "--output", str(out),
           "--parallel", parallel, *ARGS]
    p = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=300)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    return p


def oof(run):
    rows = [line.split(",", 4) for line in (run / "oof.csv").read_text().splitlines()[1:]]
    return [r[:4] for r in rows], np.array([json.loads(r[4].strip('"')) for r in rows])


def test_fold_parallel_matches_one_process(work):
    p = torchrun(work, work / "folds", "folds")
    # Each process reports its own fold; run-level lines come once, from the main process.
    for line in ("this one trains folds [1]", "this one trains folds [2]", "fold 1: best", "fold 2: best",
                 "encoded 160 examples", "next: rekit predict"):
        assert p.stdout.count(line) == 1, (line, p.stdout[-3000:])
    single = json.loads((work / "single" / "summary.json").read_text())
    par = json.loads((work / "folds" / "summary.json").read_text())
    assert par["status"] == "finished" and par["processes"] == {"world_size": 2, "parallel": "folds"}
    meta_a, probs_a = oof(work / "single")
    meta_b, probs_b = oof(work / "folds")
    assert meta_a == meta_b
    np.testing.assert_allclose(probs_a, probs_b, atol=1e-5)
    assert par["cv"]["micro_f1"] == pytest.approx(single["cv"]["micro_f1"], abs=1e-6)
    folds = {json.loads(line)["fold"] for line in (work / "folds" / "metrics.jsonl").read_text().splitlines()}
    assert folds == {0, 1}


def test_ddp_matches_one_process(work):
    p = torchrun(work, work / "ddp", "ddp")
    assert p.stdout.count("next: rekit predict") == 1  # the main process's closing lines only
    assert "Warning" not in p.stderr  # e.g. a deprecated DDP argument
    par = json.loads((work / "ddp" / "summary.json").read_text())
    assert par["status"] == "finished" and par["processes"]["parallel"] == "ddp"
    _, probs_a = oof(work / "single")
    _, probs_b = oof(work / "ddp")
    # Same examples per step, gradients averaged over processes: the same optimisation up to
    # float summation order.
    np.testing.assert_allclose(probs_a, probs_b, atol=2e-3)
    rows = [json.loads(x) for x in (work / "ddp" / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 4  # 2 folds x 2 epochs, written once (by the main process)
    assert all(r["samples_per_s"] > 0 for r in rows)


def _children(pid: int) -> list[int]:
    kids = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            with contextlib.suppress(OSError):
                if int((d / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                    kids.append(int(d.name))
    return kids


def _rank_of(pid: int) -> int | None:
    with contextlib.suppress(OSError):
        for item in (Path("/proc") / str(pid) / "environ").read_bytes().split(b"\0"):
            if item.startswith(b"RANK="):
                return int(item[5:])
    return None


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="finds the workers through /proc")
def test_ddp_processes_stop_together_when_one_is_signalled(work):
    """A Ctrl-C finds DDP processes at different steps (each host runs ahead of its GPU by its own
    margin). Here only rank 1 gets SIGINT: both must stop at the same step, and rank 0, which
    writes the files, must save the training state. (Before, rank 1 stopped alone and rank 0 died
    waiting for it in the next all-reduce, with nothing saved.)"""
    out = work / "ddp-sig"
    cmd = ["torchrun", "--standalone", "--nproc-per-node", "2", "-m", "rekit.cli", "train",
           "--train", str(work / "train.csv"), "--model", str(work / "tinybert"), "--output", str(out),
           "--parallel", "ddp", "--folds", "2", "--epochs", "500", "--batch-size", "8", "--max-length", "64",
           "--no-progress"]
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
                         env={**os.environ, "OMP_NUM_THREADS": "1"})
    try:
        deadline = time.time() + 120
        while not (out / "metrics.jsonl").exists() and time.time() < deadline and p.poll() is None:
            time.sleep(0.2)  # the first evaluation (an epoch's end) is written: training is under way
        workers = {_rank_of(c): c for c in _children(p.pid)}
        assert 1 in workers, f"no rank-1 worker among {workers}"
        os.kill(workers[1], signal.SIGINT)
        text, _ = p.communicate(timeout=120)
    finally:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
    assert p.returncode != 0
    # Only the main process speaks; it stopped on rank 1's signal, and saved the state at that step.
    steps = re.findall(r"interrupted \(stopped by (.+?) at step (\d+)/", text)
    assert steps == [("a signal to another process", steps[0][1])], text[-3000:]
    state = json.loads((out / "state.json").read_text())
    assert state["status"] == "interrupted"
    assert (out / "fold-0" / f"train_state-{int(steps[0][1]):08d}.safetensors").exists()


GPU_ARGS = ["--folds", "2", "--epochs", "6", "--batch-size", "8", "--lr", "1e-3", "--dropout", "0",
            "--max-length", "64", "--no-progress", "--save-every", "-1", "--device", "cuda",
            "--precision", "fp32", "--compile", "graphs"]


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs 2 GPUs")
def test_ddp_with_graphs_on_two_gpus(work):
    """NCCL DDP with the all-reduce captured in the step graphs trains like one GPU with graphs."""
    env = {**os.environ, "NVIDIA_TF32_OVERRIDE": "0"}
    base = ["--train", str(work / "train.csv"), "--model", str(work / "tinybert"), *GPU_ARGS]
    one = subprocess.run([shutil.which("rekit") or "rekit", "train", *base, "--output", str(work / "gpu1")],
                         capture_output=True, text=True, env={**env, "CUDA_VISIBLE_DEVICES": "0"}, timeout=600, check=False)
    assert one.returncode == 0, one.stdout[-3000:] + one.stderr[-3000:]
    two = subprocess.run(["torchrun", "--standalone", "--nproc-per-node", "2", "-m", "rekit.cli", "train", *base,
                          "--parallel", "ddp", "--output", str(work / "gpu2")],
                         capture_output=True, text=True, env=env, timeout=600, check=False)
    assert two.returncode == 0, two.stdout[-3000:] + two.stderr[-3000:]
    rows = [json.loads(x) for x in (work / "gpu2" / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["step_graphs"]["replays"] > 0  # steps ran as graph replays, all-reduce included
    _, probs_a = oof(work / "gpu1")
    _, probs_b = oof(work / "gpu2")
    np.testing.assert_allclose(probs_a, probs_b, atol=5e-3)


def _gather_worker(rank: int, port: int, failures):
    import torch.distributed as td

    from rekit.training.distributed import Dist

    td.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:
        d = Dist(rank, 2, rank, "ddp")
        full = np.arange(7 * 3, dtype=np.float32).reshape(7, 3)  # 7 rows: shares of 4 and 3
        mine = full[d.shard(list(range(7)))]
        np.testing.assert_array_equal(d.gather_rows(mine, 7, torch.device("cpu")), full)
    except Exception as e:  # noqa: BLE001 - reported to the parent
        failures.put(f"rank {rank}: {e}")
    finally:
        td.destroy_process_group()


def test_ddp_evaluation_shares_gather_back_in_order():
    """Under DDP each process predicts every world-th validation row; gathering puts every row back
    in its place, also when the shares are uneven."""
    import torch.multiprocessing as mp

    failures = mp.get_context("spawn").SimpleQueue()
    mp.spawn(_gather_worker, args=(free_port(), failures), nprocs=2)
    assert failures.empty(), failures.get()


def test_fold_parallel_composes_with_concurrent_folds(work):
    # 4 folds over 2 processes, 2 at a time inside each: the results of one process, in sequence.
    four = [*ARGS, "--folds", "4", "--epochs", "1"]
    torch.set_num_threads(1)
    try:
        assert main(["train", "--train", str(work / "train.csv"), "--model", str(work / "tinybert"),
                     "--output", str(work / "single4"), *four]) == 0
    finally:
        torch.set_num_threads(os.cpu_count() or 1)
    cmd = ["torchrun", "--standalone", "--nproc-per-node", "2", "-m", "rekit.cli", "train",
           "--train", str(work / "train.csv"), "--model", str(work / "tinybert"), "--output", str(work / "folds4"),
           "--parallel", "folds", "--concurrent-folds", "2", *four]
    p = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=300)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    for line in ("this one trains folds [1, 3]", "this one trains folds [2, 4]"):
        assert line in p.stdout, p.stdout[-3000:]
    assert p.stdout.count("2 folds train at the same time on cpu") == 2, p.stdout[-3000:]
    meta_a, probs_a = oof(work / "single4")
    meta_b, probs_b = oof(work / "folds4")
    assert meta_a == meta_b
    np.testing.assert_allclose(probs_a, probs_b, atol=1e-5)
