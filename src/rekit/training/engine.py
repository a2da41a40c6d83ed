"""The training loop shared by fine-tuning (loop.py) and MLM pretraining (pretrain.py).

`run(trainer)` is the whole loop: for each step's batch, take the step; when the policy says
so, check the loss, evaluate, save the resumable state and the best weights, stop on a signal
or early stop. Everything else belongs to the trainer's collaborators (schedule.py,
executor.py, interrupts.py, reporting.py, state.py), so the loop reads top to bottom.

A trainer is one model's training as an object (no globals, no closures): `progress`
(state.Progress), `schedule` (BatchSchedule), `policy` (CheckPolicy), `stops` (StopRequests),
`bar`, `result` (with .stopped and .nonfinite) and the methods `train_step`, `loss_finite`,
`stop_nonfinite`, `evaluate`, `save_state`, `save_best`, `interrupted`, `end_segment`.
"""

from __future__ import annotations

from typing import Any, Protocol


class Trainer(Protocol):
    progress: Any
    schedule: Any
    policy: Any
    stops: Any
    bar: Any
    result: Any
    phase: str

    def train_step(self, step_batch: list[int]) -> None: ...
    def loss_finite(self) -> bool: ...
    def stop_nonfinite(self) -> None: ...
    def evaluate(self) -> bool: ...
    def save_state(self) -> None: ...
    def save_best(self) -> None: ...
    def interrupted(self, signame: str) -> BaseException: ...
    def end_segment(self) -> None: ...


def run(t: Trainer) -> None:
    """Train until the schedule ends, an early stop, a non-finite loss or a signal (raised as
    t.interrupted(...), after the state is saved). Call inside `with t.stops:`."""
    for step_batch in t.schedule.remaining(t.progress) if t.result.stopped is None else ():
        if not advance(t, step_batch):
            break
    halted = t.stops.halt(t.progress.step, last=True)  # arrived during the last steps
    if halted:
        raise t.interrupted(halted)


def advance(t: Trainer, step_batch: list[int]) -> bool:
    """One optimizer step and whatever the policy says follows it; False when training ends here.
    (One call per step, so several trainers could be advanced in turn.)"""
    p = t.progress
    t.phase = "training"
    t.train_step(step_batch)  # the hot path: no host sync
    p.step += 1
    t.bar.update(1)
    halted = t.stops.halt(p.step)
    do_eval, do_save = t.policy.due(p.step, halted)
    if not (do_eval or do_save or halted):
        return True
    if not t.loss_finite():  # one host sync per check point
        t.stop_nonfinite()
        return False
    p.checked = p.step
    improved = False
    if do_eval:
        t.phase = "evaluation"
        improved = t.evaluate()
    if t.result.nonfinite:
        return False
    if do_save or (improved and t.policy.stateful):
        t.save_state()  # first the state, then the new best's weights (a resume re-saves them)
    if improved:
        t.save_best()
    if halted:
        raise t.interrupted(halted)
    if t.result.stopped:
        return False
    t.end_segment()
    return True
