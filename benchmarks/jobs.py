"""A tiny scheduler for the quality benchmark: subprocess jobs with dependencies, run several at
a time on one GPU, started in priority order while the time budget allows, stopped at a deadline.

Small encoders leave an H200 mostly idle (each training step is bound by Python launch
overhead, not by the GPU), so several training processes side by side get nearly the
throughput of one each: five folds and the ablations train concurrently.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Job:
    name: str
    cmd: list[str] | Callable[[], list[str]]  # a callable is called at start (after its dependencies)
    after: list[str] = field(default_factory=list)  # jobs that must have succeeded first
    estimate: float = 60.0  # expected seconds; an optional job starts only if it fits the deadline
    required: bool = False  # required jobs start whatever the estimate says
    early: bool = False  # an optional job may start before every required job has started
    # filled in by run_jobs
    status: str = "pending"  # pending / running / ok / failed / stopped / skipped
    started: float | None = None
    seconds: float | None = None
    returncode: int | None = None
    proc: subprocess.Popen | None = field(default=None, repr=False)
    log: object = field(default=None, repr=False)

    def summary(self) -> dict:
        cmd = self.cmd if isinstance(self.cmd, list) else ["(not started)"]
        return {"status": self.status, "seconds": self.seconds, "returncode": self.returncode, "cmd": " ".join(cmd)}

    def resolve(self) -> list[str]:
        if callable(self.cmd):
            self.cmd = self.cmd()
        return self.cmd


def run_inline(jobs: list[Job], runner, echo=print) -> dict[str, Job]:
    """Run the jobs one after another in this process (`runner(job) -> return code`): the CPU
    smoke mode, where importing torch in every subprocess would cost more than the work."""
    by_name = {j.name: j for j in jobs}
    for j in jobs:
        if any(by_name[d].status != "ok" for d in j.after):
            j.status = "skipped"
            continue
        j.started = time.time()
        try:
            j.resolve()
            j.returncode = runner(j)
        except Exception as e:  # noqa: BLE001 - a failed job is reported, the others still run
            echo(f"{j.name}: {type(e).__name__}: {e}")
            j.returncode = 1
        j.seconds = round(time.time() - j.started, 1)
        j.status = "ok" if j.returncode == 0 else "failed"
        echo(f"{j.name}: {j.status} in {j.seconds:.0f}s")
    return by_name


def _default_sigint() -> None:
    """In a job's process, before it starts: SIGINT back to its default. A benchmark started in the
    background (`&`, nohup) runs with SIGINT ignored, its children would inherit that, and Python
    then never turns SIGINT into KeyboardInterrupt: `_stop` would wait out its grace and kill."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _stop(job: Job, grace: float = 20.0) -> None:
    """SIGINT first (rekit records 'interrupted' and keeps its best checkpoint), then kill."""
    if job.proc is None or job.proc.poll() is not None:
        return
    job.proc.send_signal(signal.SIGINT)
    try:
        job.proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        job.proc.kill()
        job.proc.wait()


def run_jobs(jobs: list[Job], max_parallel: int, deadline: float, log_dir: Path, env: dict | None = None,
             echo=print, on_done=None, poll: float = 0.5) -> dict[str, Job]:
    """Run `jobs` (a list in priority order) until all finished or `deadline` (time.time()).

    A job starts when its dependencies succeeded, a slot is free, and, unless required, its
    estimate fits before the deadline and every required job has started (or it is `early`):
    optional work never delays the rows. A job whose dependency failed is skipped. At the
    deadline running jobs are stopped (status 'stopped').
    """
    log_dir.mkdir(parents=True, exist_ok=True)
    by_name = {j.name: j for j in jobs}
    full_env = {**os.environ, **(env or {})}
    while True:
        now = time.time()
        running = [j for j in jobs if j.status == "running"]
        for j in running:
            rc = j.proc.poll()
            if rc is not None:
                j.returncode, j.seconds = rc, round(now - j.started, 1)
                j.status = "ok" if rc == 0 else "failed"
                j.log.close()
                echo(f"[{time.strftime('%H:%M:%S')}] {j.name}: {j.status} in {j.seconds:.0f}s")
                if on_done:
                    on_done(j)
        for j in jobs:
            if j.status == "pending" and any(by_name[d].status in ("failed", "skipped", "stopped") for d in j.after):
                j.status = "skipped"
        running = [j for j in jobs if j.status == "running"]
        required_waiting = any(j.required and j.status == "pending" for j in jobs)
        for j in jobs:
            if len(running) >= max_parallel:
                break
            if j.status != "pending" or any(by_name[d].status != "ok" for d in j.after):
                continue
            if not j.required and (now + j.estimate > deadline or (required_waiting and not j.early)):
                continue
            j.log = open(log_dir / f"{j.name}.log", "w", encoding="utf-8")  # noqa: SIM115 (open while the job runs)
            j.proc = subprocess.Popen(j.resolve(), stdout=j.log, stderr=subprocess.STDOUT, env=full_env,
                                      preexec_fn=_default_sigint)
            j.status, j.started = "running", now
            running.append(j)
            echo(f"[{time.strftime('%H:%M:%S')}] start {j.name}")
        if not running:
            for j in jobs:
                if j.status == "pending":
                    j.status = "skipped"
            break
        if now >= deadline:
            for j in running:
                _stop(j)
                j.status, j.seconds = "stopped", round(time.time() - j.started, 1)
                j.returncode = j.proc.returncode
                j.log.close()
                echo(f"[{time.strftime('%H:%M:%S')}] {j.name}: stopped at the deadline after {j.seconds:.0f}s")
            for j in jobs:
                if j.status == "pending":
                    j.status = "skipped"
            break
        time.sleep(poll)
    return by_name
