"""`rekit tune --workers N`: start N worker processes on this machine, watch them, recover dead ones.

Each worker is `python -m rekit.tuning.worker STUDY_DIR --index K`, logging to
STUDY_DIR/logs/worker-K.log; with GPUs, worker K sees only GPU K mod #GPUs (CUDA_VISIBLE_DEVICES),
without them the CPU cores are split between the workers.

A worker that dies (killed, out of memory, crashed) leaves its trial RUNNING in the storage. Two
mechanisms fail and re-queue it (RetryHeartbeatStaleTrialCallback, up to --retries times):
* here, at once: the trial records its worker's host and pid, and this process knows its children;
  on start, trials RUNNING under a pid of this host that no longer exists are recovered the same way;
* the storage heartbeat, for workers on other machines: a trial silent for 2 x --heartbeat seconds
  is failed by the next worker that starts a trial, wherever it runs.
A replacement worker is started while work is left (at most N replacements per run).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from rekit.errors import RekitError
from rekit.tuning.storage import STORAGE_ENV, retry_callback
from rekit.tuning.study import Study
from rekit.tuning.worker import EXIT_GAVE_UP, work_left

POLL_S = 1.0  # how often the pool checks its workers and the storage


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def recover_dead(study: Study, ost, dead_pids: set[int] | None = None) -> list[int]:
    """Fail (and re-queue) RUNNING trials of this host whose worker process is gone.

    `dead_pids`: the pids known dead (our reaped children); None: check every recorded pid."""
    import copy

    from optuna.exceptions import UpdateFinishedTrialError
    from optuna.trial import TrialState

    from rekit import rundir

    host, storage, recovered = socket.gethostname(), ost._storage, []
    retry = retry_callback(study.settings.retries)
    for trial in ost.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        worker = trial.user_attrs.get("worker") or {}
        pid = worker.get("pid")
        if worker.get("host") != host or not isinstance(pid, int):
            continue
        if (pid not in dead_pids) if dead_pids is not None else pid_alive(pid):
            continue
        try:  # (the reason first: a finished trial takes no more attributes)
            storage.set_trial_user_attr(trial._trial_id, "error", f"its worker (pid {pid}) died")
            if not storage.set_trial_state_values(trial._trial_id, state=TrialState.FAIL):
                continue
        except UpdateFinishedTrialError:  # another process (a heartbeat check) got there first
            continue
        retry(ost, copy.deepcopy(storage.get_trial(trial._trial_id)))
        # The trial's run directory says why it stopped (made here if the worker died before making
        # it, e.g. while reading the training data).
        run = Path(trial.user_attrs.get("run_dir", study.trial_dir(trial.number)))
        run.mkdir(parents=True, exist_ok=True)
        rundir.write_state(run, "failed", reason=f"worker process {pid} died; the trial was re-queued")
        recovered.append(trial.number)
    return recovered


def gpu_ids() -> list[str]:
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return [g for g in visible.split(",") if g.strip()]
    try:
        import torch

        return [str(i) for i in range(torch.cuda.device_count())]
    except Exception:  # noqa: BLE001 - no usable CUDA: CPU workers
        return []


@dataclass
class Worker:
    index: int
    proc: subprocess.Popen
    log: Path


class Pool:
    def __init__(self, study: Study, n: int, echo=print, deadline: float | None = None):
        self.study, self.n, self.echo, self.deadline = study, n, echo, deadline
        self.gpus = gpu_ids()
        self.threads = None if self.gpus else max(1, (os.cpu_count() or 1) // n)
        self.workers: dict[int, Worker] = {}
        self.owed = 0  # dead workers not replaced yet
        (study.dir / "logs").mkdir(parents=True, exist_ok=True)

    def spawn(self, index: int) -> None:
        env = dict(os.environ, **{STORAGE_ENV: self.study.url, "PYTHONUNBUFFERED": "1"})
        cmd = [sys.executable, "-m", "rekit.tuning.worker", str(self.study.dir), "--index", str(index)]
        if self.gpus:
            env["CUDA_VISIBLE_DEVICES"] = self.gpus[index % len(self.gpus)]
        if self.threads:
            cmd += ["--threads", str(self.threads)]
            env.setdefault("OMP_NUM_THREADS", str(self.threads))
        if self.deadline is not None:
            cmd += ["--deadline", str(self.deadline)]
        log = self.study.dir / "logs" / f"worker-{index}.log"
        with open(log, "a", encoding="utf-8") as f:
            # Own session: a Ctrl-C in the terminal reaches this process, which then stops the workers.
            proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, env=env, stdin=subprocess.DEVNULL,
                                    start_new_session=True)
        self.workers[index] = Worker(index, proc, log)
        where = f"GPU {env['CUDA_VISIBLE_DEVICES']}" if self.gpus else f"{self.threads} CPU thread(s)"
        self.echo(f"worker {index}: pid {proc.pid}, {where}, log {log}")

    def stop(self, sig=signal.SIGINT, wait_s: float = 30) -> None:
        for w in self.workers.values():
            if w.proc.poll() is None:
                w.proc.send_signal(sig)
        end = time.time() + wait_s
        for w in self.workers.values():
            try:
                w.proc.wait(max(0.1, end - time.time()))
            except subprocess.TimeoutExpired:
                w.proc.kill()
                w.proc.wait()

    def _last_error(self, w: Worker) -> str:
        try:
            lines = [ln for ln in w.log.read_text(encoding="utf-8", errors="replace").splitlines() if ln.strip()]
        except OSError:
            return "(no log)"
        errors = [ln for ln in lines if ln.startswith("rekit: error:")]
        return (errors or lines or ["(empty log)"])[-1].removeprefix("rekit: error: ")

    def _reap(self, ost) -> None:
        for index, w in list(self.workers.items()):
            rc = w.proc.poll()
            if rc is None:
                continue
            del self.workers[index]
            if rc == 0:
                continue
            if rc in (2, EXIT_GAVE_UP):
                self.stop()
                raise RekitError(f"worker {index}: {self._last_error(w)} (log: {w.log})")
            how = f"signal {signal.Signals(-rc).name}" if rc < 0 else f"exit code {rc}"
            lost = recover_dead(self.study, ost, {w.proc.pid})
            self.echo(f"worker {index} (pid {w.proc.pid}) died ({how}); "
                      + (f"trial(s) {', '.join(map(str, lost))} failed and re-queued" if lost else "no trial was lost")
                      + f"; log: {w.log}")
            self.owed += 1

    def run(self, on_trial=None) -> None:
        """Run until no work is left and every worker has exited. `on_trial(frozen_trial)` for each
        trial that finishes meanwhile (for progress output)."""
        ost = self.study.load()
        seen = {t.number for t in ost.get_trials(deepcopy=False) if t.state.is_finished()}
        for i in range(self.n):
            self.spawn(i)
        next_index = self.n
        try:
            while True:
                time.sleep(POLL_S)
                self._reap(ost)
                for t in ost.get_trials(deepcopy=False):
                    if t.state.is_finished() and t.number not in seen:
                        seen.add(t.number)
                        if on_trial:
                            on_trial(t)
                timed_out = self.deadline is not None and time.time() >= self.deadline
                if self.owed and not timed_out and next_index < 2 * self.n \
                        and work_left(ost, self.study.settings.trials):
                    self.spawn(next_index)  # replaces a dead worker (a new index: a fresh sampler seed offset)
                    next_index += 1
                    self.owed -= 1
                if not self.workers:
                    break
        except BaseException:
            self.stop()
            raise

