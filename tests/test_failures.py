"""Failures during training, simulated on the CPU: a non-finite loss, CUDA out-of-memory, Ctrl-C.

The model's forward is patched to misbehave at a chosen call; everything else is the real loop.
Runtime: about 25 s on 2 CPU cores.
"""

import json
import os
import signal
import time

import numpy as np
import pytest
import torch

from conftest import one_process_ddp
from rekit.cli import main
from rekit.config import RunConfig
from rekit.data.labels import LabelMap
from rekit.data.readers import write_csv
from rekit.data.synthetic import make_splits
from rekit.encoding.tokenize import REEncoder
from rekit.errors import RekitError
from rekit.modeling.backbone import build_model, load_tokenizer
from rekit.modeling.inference import predict_proba
from rekit.modeling.model import REModel
from rekit.runtime import seed_everything
from rekit.training import checkpoint
from rekit.training.cv import tokenizer_corpus
from rekit.training.interrupts import NonFiniteLoss, OutOfMemory, TrainingInterrupted
from rekit.training.loop import fit

CPU = torch.device("cpu")
TINY = {"model": "scratch", "scratch_size": "tiny", "scratch_vocab_size": 1500, "max_length": 64,
        "lr": 1e-3, "batch_size": 16, "epochs": 2, "progress": False}


def cfg_of(**kw):
    return RunConfig.from_dict({}, {**TINY, **kw})


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny models gain nothing from threads, and lose a lot to them on a busy 2-core machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def setup():
    train, test = make_splits(seed=3, n_train=96, n_test=48)
    cfg = cfg_of()
    lm = LabelMap.infer([r.label for r in train])
    tok = load_tokenizer(cfg.model, tokenizer_corpus(train, cfg), ["PER", "ORG", "LOC", "DAT"])
    enc = REEncoder(tok, cfg.model.marker, cfg.model.max_length)
    return lm, tok, enc.encode(train, lm), enc.encode(test, lm)


def patch_forward(monkeypatch, misbehave):
    """REModel.forward, but `misbehave(call, batch, out)` may raise or replace the output."""
    original, calls = REModel.forward, [0]

    def forward(self, **batch):
        calls[0] += 1
        out = misbehave(calls[0], batch, None)
        if out is None:
            out = misbehave(calls[0], batch, original(self, **batch)) if self.training else original(self, **batch)
        return out

    monkeypatch.setattr(REModel, "forward", forward)
    return calls


def nan_after(call_limit):
    def misbehave(call, batch, out):
        if out is None:
            return None
        logits, loss = out
        return (logits, loss * float("nan")) if call > call_limit and loss is not None else out
    return misbehave


def train_once(setup, tmp_path, **kw):
    lm, tok, train, valid = setup
    c = cfg_of(**kw)
    seed_everything(0)
    model = build_model(c.model, tok, lm)
    return model, fit(model, tok, lm, train, valid, c.train, tmp_path, seed=0, device=CPU)


# -- non-finite loss ----------------------------------------------------------------------------
def test_nonfinite_loss_stops_the_fold_promptly_and_keeps_the_best_checkpoint(setup, monkeypatch, tmp_path):
    # 6 steps per epoch, evaluation at step 6 (forward call 7), the state checked every 2 steps.
    # From forward call 8 (step 7) the loss is NaN: caught at the next check point, step 8.
    patch_forward(monkeypatch, nan_after(7))
    model, result = train_once(setup, tmp_path, save_every=2, epochs=3)
    assert result.nonfinite and "non-finite training loss between steps 6 and 8" in result.stopped
    assert "kept the best checkpoint (step 6" in result.stopped
    assert [h["step"] for h in result.history] == [6]  # no evaluation of the broken model
    assert any(not torch.isfinite(p).all() for p in model.parameters()), "the weights did go NaN"
    # The kept checkpoint is the finite one from step 6 and reproduces the fold's best probabilities.
    _lm, _tok, _, valid = setup
    loaded, tok2, _ = REModel.load(tmp_path)
    assert all(torch.isfinite(p).all() for p in loaded.parameters())
    np.testing.assert_allclose(predict_proba(loaded, valid, tok2.pad_token_id, 64, CPU), result.best_probs, atol=1e-5)


def test_nonfinite_loss_before_any_checkpoint_is_a_clear_error(setup, monkeypatch, tmp_path):
    patch_forward(monkeypatch, nan_after(0))
    with pytest.raises(NonFiniteLoss, match=r"non-finite between steps 0 and 2, before the first evaluation.*--lr"):
        train_once(setup, tmp_path, save_every=2)


def test_nonfinite_fold_is_marked_in_the_summary(setup, monkeypatch, tmp_path, capsys):
    train, _ = make_splits(seed=3, n_train=96, n_test=8)
    write_csv(train, tmp_path / "train.csv")
    patch_forward(monkeypatch, nan_after(6))  # the holdout has 86 training rows: 6 steps per epoch
    run = tmp_path / "run"
    flags = [f"--{k.replace('_', '-')}={v}" for k, v in TINY.items() if k != "progress"]
    assert main(["train", "--train", str(tmp_path / "train.csv"), "--output", str(run), "--folds", "1",
                 "--no-progress", *flags]) == 0
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "finished" and summary["nonfinite_folds"] == [0]
    assert summary["folds"][0]["nonfinite"] and "non-finite" in summary["folds"][0]["stopped"]
    assert "warning: fold 1 non-finite training loss" in capsys.readouterr().out
    assert not list((run / "fold-0").glob("train_state*"))


# -- CUDA out of memory ----------------------------------------------------------------------------
def oom_above(max_examples):
    """Pretend the GPU holds at most `max_examples` examples per micro-batch."""
    def misbehave(call, batch, out):
        if out is None and "labels" in batch and batch["input_ids"].shape[0] > max_examples:  # training only
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return out
    return misbehave


def test_oom_says_what_would_fit(setup, monkeypatch, tmp_path):
    patch_forward(monkeypatch, oom_above(8))
    with pytest.raises(OutOfMemory) as e:
        train_once(setup, tmp_path)
    msg = str(e.value)
    assert "CUDA ran out of memory at step 1 with a micro-batch of 16 examples" in msg
    assert "--grad-accum 2 (micro-batch 8, same effective batch of 16)" in msg
    assert "--batch-size 8" in msg and "--max-length 32" in msg and "--oom-retry" in msg


def test_oom_retry_halves_the_micro_batch_and_matches_that_setting(setup, monkeypatch, tmp_path):
    calls = patch_forward(monkeypatch, oom_above(4))  # needs micro-batches of 4: --grad-accum 4
    model, result = train_once(setup, tmp_path / "retry", oom_retry=True, epochs=1)
    assert calls[0] > 0
    assert [n.split(":")[1].strip() for n in result.notes] == [
        "continued with --grad-accum 2 (micro-batch 8, same effective batch of 16)",
        "continued with --grad-accum 4 (micro-batch 4, same effective batch of 16)"]
    monkeypatch.undo()
    reference, expected = train_once(setup, tmp_path / "plain", grad_accum=4, epochs=1)
    # Same effective batch and the failed attempts drew no random numbers: the very same training.
    for (name, a), b in zip(model.state_dict().items(), reference.state_dict().values()):
        assert torch.equal(a, b), name
    assert result.best_score == expected.best_score


def test_oom_through_the_cli_is_one_line_and_recorded(monkeypatch, tmp_path, capsys):
    train, _ = make_splits(seed=3, n_train=64, n_test=8)
    write_csv(train, tmp_path / "train.csv")
    patch_forward(monkeypatch, oom_above(8))
    run = tmp_path / "run"
    flags = [f"--{k.replace('_', '-')}={v}" for k, v in TINY.items() if k != "progress"]
    assert main(["train", "--train", str(tmp_path / "train.csv"), "--output", str(run), "--folds", "2",
                 "--no-progress", *flags]) == 2
    err = capsys.readouterr().err
    assert err.startswith("rekit: error: fold 1/2: CUDA ran out of memory") and "--grad-accum 2" in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    state = json.loads((run / "state.json").read_text())
    assert state["status"] == "failed" and "--grad-accum 2" in state["reason"]


def test_prediction_splits_a_batch_that_runs_out_of_memory(setup, monkeypatch):
    """Predicting (rekit predict / evaluate, and each evaluation while training): a batch too large
    for the GPU is split, and so is every later one; the probabilities are those of small batches."""
    lm, tok, _, valid = setup
    seed_everything(0)
    model = build_model(cfg_of().model, tok, lm)
    reference = predict_proba(model, valid, tok.pad_token_id, 4, CPU)

    def misbehave(call, batch, out):
        if out is None and "labels" not in batch and batch["input_ids"].shape[0] > 5:  # predicting only
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return out

    patch_forward(monkeypatch, misbehave)
    notes = []
    probs = predict_proba(model, valid, tok.pad_token_id, 16, CPU, echo=notes.append)
    np.testing.assert_allclose(probs, reference, atol=1e-6)
    assert notes == ["CUDA out of memory on a batch of 16: continuing with batches of 8",
                     "CUDA out of memory on a batch of 8: continuing with batches of 4"]


def test_prediction_out_of_memory_on_one_example_is_a_one_line_error(setup, monkeypatch):
    lm, tok, _, valid = setup
    model = build_model(cfg_of().model, tok, lm).train()

    def misbehave(call, batch, out):
        if out is None and "labels" not in batch:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return out

    patch_forward(monkeypatch, misbehave)
    with pytest.raises(RekitError, match=r"CUDA ran out of memory predicting a single example of [0-9]+ tokens"):
        predict_proba(model, valid, tok.pad_token_id, 4, CPU)
    assert model.training  # the model's mode is restored on the way out


@pytest.mark.skipif(not torch.cuda.is_available(), reason="a real CUDA out-of-memory needs a CUDA device")
def test_real_cuda_out_of_memory_while_predicting_is_survived(setup):
    """On a GPU with little memory left, a large prediction batch really runs out of memory: it
    is split until it fits, and the probabilities match those of small batches."""
    lm, tok, _, _ = setup
    cuda = torch.device("cuda")
    _, rows = make_splits(seed=5, n_train=8, n_test=2048)
    feats = REEncoder(tok, cfg_of().model.marker, 64).encode(rows, lm)
    seed_everything(0)
    model = build_model(cfg_of(scratch_size="base").model, tok, lm).to(cuda)
    reference = predict_proba(model, feats, tok.pad_token_id, 64, cuda)
    torch.cuda.empty_cache()
    total = torch.cuda.get_device_properties(cuda).total_memory
    # Room for the weights and about 100 MB more: a batch of 2,048 needs far more than that.
    torch.cuda.set_per_process_memory_fraction((torch.cuda.memory_allocated() + 100 * 2**20) / total)
    notes = []
    try:
        probs = predict_proba(model, feats, tok.pad_token_id, 2048, cuda, echo=notes.append)
    finally:
        torch.cuda.set_per_process_memory_fraction(1.0)
    assert notes and notes[0] == "CUDA out of memory on a batch of 2048: continuing with batches of 1024"
    np.testing.assert_allclose(probs, reference, atol=2e-4)


def test_oom_under_ddp_stops_instead_of_retrying(setup, monkeypatch, tmp_path):
    """Under DDP a retry on one process would split its steps unlike the others' and pair its
    all-reduces with the wrong ones: --oom-retry is off there, and the error says what fits.
    (A one-process gloo group counts as DDP here.)"""
    patch_forward(monkeypatch, oom_above(4))
    lm, tok, train, valid = setup
    c = cfg_of(oom_retry=True, epochs=1)
    said = []
    with one_process_ddp(monkeypatch, "gloo") as ddp, \
            pytest.raises(OutOfMemory, match=r"at step 1 .*To fit: --grad-accum 2 \(micro-batch 8") as e:
        fit(build_model(c.model, tok, lm), tok, lm, train, valid, c.train, tmp_path, seed=0, device=CPU,
            echo=said.append, dist=ddp)
    assert "--oom-retry halves" not in str(e.value)
    assert any("--oom-retry is off under --parallel ddp" in m for m in said)


# -- Ctrl-C --------------------------------------------------------------------------------------
def test_a_repeated_signal_is_one_request_a_later_one_aborts(monkeypatch):
    """Under torchrun one Ctrl-C reaches a worker twice (terminal, then launcher): still one request
    to stop at the step boundary. A second press, later, aborts at once."""
    from rekit.training import interrupts

    monkeypatch.setattr(interrupts, "REPEAT_GRACE_S", 0.3)
    with interrupts.stop_on_signal() as stop:
        os.kill(os.getpid(), signal.SIGINT)
        os.kill(os.getpid(), signal.SIGTERM)  # at once: the same request
        assert stop == ["SIGINT"]
        time.sleep(0.4)
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.1)  # the handler runs between bytecodes of this thread


def test_ctrl_c_stops_at_the_step_boundary_with_the_state_saved(setup, monkeypatch, tmp_path):
    def misbehave(call, batch, out):
        if out is None and call == 3:  # during the 3rd step's forward pass
            os.kill(os.getpid(), signal.SIGINT)
        return out

    patch_forward(monkeypatch, misbehave)
    before = signal.getsignal(signal.SIGINT)
    with pytest.raises(TrainingInterrupted, match="stopped by SIGINT at step 3/12"):
        train_once(setup, tmp_path)
    assert signal.getsignal(signal.SIGINT) is before  # the handler is only installed while training
    assert checkpoint.saved_step(tmp_path) == 3
    state = checkpoint.load_state(tmp_path)
    assert state["progress"]["step"] == 3 and state["result"]["history"] == []
