"""One worker: run trials of a study until it has enough; any number of these may share a study.

`rekit tune --workers 1` runs this loop in its own process; with more workers each runs as
`python -m rekit.tuning.worker STUDY_DIR --index K` (started by pool.py, which passes the storage
URL in the environment). Exit codes: 0 done, 2 a user error (bad data/config: every trial would
hit it), 3 gave up after repeated trial failures, 130 interrupted.

The stop rule counts COMPLETE + PRUNED + RUNNING trials against `trials` (so N workers do not
overshoot by N-1) but always runs WAITING trials, i.e. trials re-queued because their worker died.
Two workers that check at the same instant can still both start the last trial: a study may end
with one trial more than asked per extra worker, never fewer.
"""

from __future__ import annotations

import argparse
import signal
import sys
import time

from rekit.errors import RekitError
from rekit.tuning.study import Study, describe, open_study

MAX_CONSECUTIVE_FAILURES = 5
EXIT_GAVE_UP = 3


class GaveUp(Exception):
    pass


def make_sampler(study: Study, index: int):
    import optuna

    s = study.settings
    seed = None if s.seed is None else s.seed + index  # equal seeds would make workers sample alike
    if s.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    # constant_liar: a running trial counts as a bad result so parallel workers spread out.
    return optuna.samplers.TPESampler(seed=seed, constant_liar=True)


def make_pruner(study: Study):
    import optuna

    if study.settings.pruner == "none":
        return optuna.pruners.NopPruner()
    return optuna.pruners.MedianPruner(n_startup_trials=study.settings.startup_trials)


def work_left(ost, trials: int) -> bool:
    from optuna.trial import TrialState

    states = [t.state for t in ost.get_trials(deepcopy=False)]
    counted = sum(s in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING) for s in states)
    return counted < trials or TrialState.WAITING in states


def finished_elsewhere(error: Exception) -> bool:
    """Optuna's complaint when this worker reports a trial another process already finished."""
    import optuna

    return isinstance(error, optuna.exceptions.UpdateFinishedTrialError) or str(error).startswith("Cannot tell a")


def run_trials(study: Study, index: int = 0, progress: bool = True, echo=print, deadline: float | None = None) -> int:
    """Run trials until the study has enough (or `deadline`); returns how many this worker ran."""
    import optuna

    from rekit.tuning.objective import Objective, TrialFailed

    optuna.logging.set_verbosity(optuna.logging.WARNING)  # we print our own one line per trial
    ost = study.load(sampler=make_sampler(study, index), pruner=make_pruner(study))
    objective = Objective(study, progress=progress, echo=echo)
    ran, failures = 0, 0
    while work_left(ost, study.settings.trials):
        if deadline is not None and time.time() >= deadline:
            echo("--timeout reached: no new trials")
            break
        finished = []
        try:
            ost.optimize(objective, n_trials=1, catch=(TrialFailed,), gc_after_trial=True,
                         callbacks=[lambda _s, t: finished.append(t)])  # noqa: B023 (called within this iteration)
        except (optuna.exceptions.UpdateFinishedTrialError, ValueError) as e:
            if isinstance(e, RekitError) or not finished_elsewhere(e):
                raise
            # Another process failed this trial meanwhile (its heartbeat looked stale): it is
            # re-queued there; this worker simply goes on.
            echo(f"a trial was failed by another process while running here ({e}); going on")
            continue
        ran += 1
        trial = finished[-1]
        echo(describe(trial, study.settings.metric))
        failures = failures + 1 if trial.state.name == "FAIL" else 0
        if failures >= MAX_CONSECUTIVE_FAILURES:
            raise GaveUp(f"{failures} trials in a row failed (last: {trial.user_attrs.get('error', '?')}); "
                         "check the search space")
    return ran


def set_threads(n: int | None) -> None:
    """Share the CPU between workers instead of every worker using every core."""
    if n:
        import torch

        torch.set_num_threads(n)


def listen_for_stop() -> None:
    """SIGINT is how the pool stops a worker (KeyboardInterrupt between trials; inside a trial the
    training loop saves and stops at the next step). A `rekit tune` started in the background (`&`,
    nohup) runs with SIGINT ignored, and its workers would inherit that and ignore the pool, which
    then kills them after its wait: take the default handler back."""
    signal.signal(signal.SIGINT, signal.default_int_handler)


def main(argv: list[str] | None = None) -> int:
    listen_for_stop()
    p = argparse.ArgumentParser(prog="python -m rekit.tuning.worker",
                                description="one worker process of `rekit tune` (started by it)")
    p.add_argument("study_dir")
    p.add_argument("--index", type=int, default=0, help="worker number (seeds its sampler)")
    p.add_argument("--deadline", type=float, default=None, help="start no trial after this Unix time")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    args = p.parse_args(argv)
    echo = lambda msg: print(f"[worker {args.index}] {msg}", flush=True)  # noqa: E731
    try:
        set_threads(args.threads)
        study = open_study(args.study_dir)
        run_trials(study, args.index, progress=False, echo=echo, deadline=args.deadline)
    except RekitError as e:
        print(f"rekit: error: {e}", file=sys.stderr, flush=True)
        return 2
    except GaveUp as e:
        print(f"rekit: error: {e}", file=sys.stderr, flush=True)
        return EXIT_GAVE_UP
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
