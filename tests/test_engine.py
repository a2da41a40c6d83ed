"""The training engine's collaborators, each alone: batch schedule, check policy, LR plan,
signal requests, the pretraining log pruning and the atomic encoder swap."""

import json
import os
import signal

import numpy as np
import pytest
import torch

from rekit.training.interrupts import StopRequests
from rekit.training.mlm import prune_log, publish, work_dir
from rekit.training.optim import LRPlan, lr_factor
from rekit.training.schedule import BatchSchedule, CheckPolicy
from rekit.training.state import Progress

LENGTHS = [5, 9, 3, 7, 12, 4, 8, 6, 10, 2, 11]  # 11 examples: 3 steps of 4 per epoch (the last has 3)


def test_schedule_covers_every_example_once_per_epoch_and_a_resume_redraws_the_same_steps():
    s = BatchSchedule(LENGTHS, 4, 2, np.random.default_rng(0))
    assert (s.steps_per_epoch, s.total) == (3, 6)
    p = Progress()
    steps = []
    for batch in s.remaining(p):
        steps.append(batch)
        p.step += 1
        if p.step == 4:  # mid-epoch 2: what a save would keep
            saved = {"step": p.step, "epoch_rng": s.rng_to_save(p)}
    assert len(steps) == 6
    for epoch in (steps[:3], steps[3:]):
        assert sorted(i for b in epoch for i in b) == list(range(len(LENGTHS)))
    # a new process resumes at step 4 from the saved RNG state: the same remaining steps
    r = BatchSchedule(LENGTHS, 4, 2, np.random.default_rng(123))
    q = Progress(step=saved["step"], epoch_rng=saved["epoch_rng"])
    r.restore(q)
    rest = []
    for batch in r.remaining(q):
        rest.append(batch)
        q.step += 1
    assert rest == steps[4:]


def test_schedule_stops_at_a_lowered_total_inside_an_epoch():
    s = BatchSchedule(LENGTHS, 4, 3, np.random.default_rng(0))
    s.total = 4
    p = Progress()
    for _ in s.remaining(p):
        p.step += 1
    assert p.step == 4


def test_check_policy():
    s = BatchSchedule(LENGTHS, 4, 3, np.random.default_rng(0))  # 3 steps per epoch
    policy = CheckPolicy(s, eval_every=2, save_every=0)
    assert [policy.due(k, None) for k in (1, 2, 3)] == [(False, False), (True, False), (True, True)]
    assert policy.due(1, "SIGINT") == (False, True)  # a signal saves the state
    assert CheckPolicy(s, save_every=-1).due(3, "SIGINT") == (True, False)  # -1: never
    assert CheckPolicy(s, save_every=5).due(5, None) == (False, True)
    s.total = 4
    assert CheckPolicy(s, eval_at_total=True).due(4, None) == (True, True)  # a shortened schedule's end


def test_lr_plan_is_rekits_schedule_and_survives_a_scheduler_round_trip():
    plan = LRPlan(100, 0.1, "linear")
    assert [plan(k) for k in (0, 9, 10, 55, 99)] == [lr_factor(k, 100, 10, "linear") for k in (0, 9, 10, 55, 99)]
    opt = torch.optim.AdamW([torch.nn.Parameter(torch.ones(2))], lr=1e-3)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, plan)
    plan.total = 50  # a time budget shortened the schedule
    state = sched.state_dict()
    plan2 = LRPlan(100, 0.1, "linear")
    torch.optim.lr_scheduler.LambdaLR(torch.optim.AdamW([torch.nn.Parameter(torch.ones(2))], lr=1e-3), plan2
                                      ).load_state_dict(state)
    assert plan2.total == 50


def test_stop_requests_catch_sigint_and_restore_the_handler():
    before = signal.getsignal(signal.SIGINT)
    with StopRequests() as stops:
        assert stops.halt(1) is None
        os.kill(os.getpid(), signal.SIGINT)
        assert stops.halt(2) == "SIGINT"
    assert signal.getsignal(signal.SIGINT) is before


def test_prune_log_drops_replayed_rows_and_a_torn_line(tmp_path):
    log = tmp_path / "pretrain.jsonl"
    log.write_text("".join(json.dumps({"step": s}) + "\n" for s in (5, 10, 15)) + '{"step": 2')
    prune_log(log, 10)
    assert [json.loads(x)["step"] for x in log.read_text().splitlines()] == [5, 10]


class _Saves:
    def __init__(self, name, fail=False):
        self.name, self.fail = name, fail

    def save_pretrained(self, d):
        if self.fail:
            raise OSError(28, "No space left on device")
        os.makedirs(d, exist_ok=True)
        (d / f"{self.name}.txt").write_text(self.name)


def test_publish_replaces_the_old_encoder_only_when_the_new_one_is_complete(tmp_path):
    out = tmp_path / "enc"
    out.mkdir()
    (out / "old.txt").write_text("old")
    work = work_dir(out)
    work.mkdir()
    with pytest.raises(OSError):
        publish(work, out, _Saves("model", fail=True), _Saves("tokenizer"), {})
    assert (out / "old.txt").is_file()  # a failed save leaves the old encoder
    publish(work, out, _Saves("model"), _Saves("tokenizer"), {"steps": 3})
    assert sorted(p.name for p in out.iterdir()) == ["model.txt", "pretrain.json", "tokenizer.txt"]
    assert not work.exists()


def test_check_policy_spaces_epoch_end_saves_by_time_but_not_the_others():
    s = BatchSchedule(LENGTHS, 4, 3, np.random.default_rng(0))  # 3 steps per epoch
    policy = CheckPolicy(s, save_every=2, epoch_save_seconds=3600)
    assert policy.due(3, None) == (True, False)  # an epoch end soon after the last save: evaluate only
    assert policy.due(4, None) == (False, True)  # --save-every still saves
    assert policy.due(5, "SIGINT") == (False, True)  # and so does a signal
    policy.last_save -= 3600
    assert policy.due(6, None) == (True, True)
