"""What the training loop does when something stops it: Ctrl-C or SIGTERM, CUDA running out of
memory, a non-finite loss. The loop (loop.py) decides when; this module holds the signals, the
errors and the advice they carry."""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
import time
from typing import Any

import torch

from rekit.config import TrainConfig
from rekit.errors import RekitError


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C or SIGTERM during training; the state was saved at a step boundary."""


class OutOfMemory(RekitError):
    """CUDA ran out of memory; the message says what would fit."""


class NonFiniteLoss(RekitError):
    """The loss became NaN/inf before there was any checkpoint to keep."""


def oom_advice(cfg: TrainConfig, accum: int, longest: int, max_length: int, can_retry: bool = True) -> str:
    """What would fit after a CUDA OOM in the forward/backward pass, as flags to pass (and
    --oom-retry where it could run: not under DDP)."""
    micro = -(-cfg.batch_size // accum)
    fits = [a for a in range(2 * accum, cfg.batch_size + 1) if cfg.batch_size % a == 0]
    options = []
    if fits:
        options.append(f"--grad-accum {fits[0]} (micro-batch {cfg.batch_size // fits[0]}, same effective batch "
                       f"of {cfg.batch_size})")
    if cfg.batch_size > 1:
        options.append(f"--batch-size {cfg.batch_size // 2}")
    if max_length > 16:
        options.append(f"--max-length {max(16, max_length // 2)}")
    if cfg.rdrop > 0:
        options.append("--rdrop 0 (R-Drop runs every example twice)")
    retry = "" if cfg.oom_retry or not can_retry else "; --oom-retry halves the micro-batch by itself"
    return (f"micro-batch of {micro} examples up to {longest} tokens (--batch-size {cfg.batch_size}, "
            f"--grad-accum {accum}, --max-length {max_length}). To fit: {' or '.join(options)}{retry}")


def release_cuda_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()


REPEAT_GRACE_S = 1.0  # a second signal sooner than this after the first is the same request


@contextlib.contextmanager
def stop_on_signal():
    """While training: the first Ctrl-C (or SIGTERM, e.g. a scheduler's preemption) asks the loop to
    stop at the next step boundary, saving its state; a second one, a second or more later, aborts
    at once. (Under torchrun one Ctrl-C reaches each worker twice, from the terminal and from the
    launcher; the repeat is not a second press.)"""
    requested: list[str] = []
    if threading.current_thread() is not threading.main_thread():  # signals only reach the main thread
        yield requested
        return

    first = 0.0  # when the first signal came

    def handler(signum, frame):
        nonlocal first
        if requested:
            if time.monotonic() - first < REPEAT_GRACE_S:
                return  # the same request: torchrun passes the terminal's Ctrl-C on to its workers, which got it too
            raise KeyboardInterrupt
        first = time.monotonic()
        requested.append(signal.Signals(signum).name)
        sys.stderr.write(f"\nrekit: {requested[0]}: stopping after this step and saving the training state "
                         "(Ctrl-C again to abort now)\n")

    previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    for s in previous:
        signal.signal(s, handler)
    try:
        yield requested
    finally:
        for s, h in previous.items():
            signal.signal(s, h if h is not None else signal.SIG_DFL)


STOP_CHECK_EVERY = 25  # DDP: steps between the processes' agreements on whether a signal stops them


class StopRequests:
    """Whether a signal asks the loop to stop, as `halt(step)` sees it. Enter it (a context) to
    install the handlers (stop_on_signal). Under DDP (`dist` with .ddp) the processes agree on it
    every STOP_CHECK_EVERY steps and after the last: each process's host runs ahead of its GPU by
    its own margin, so one Ctrl-C finds them at different steps, and a process that stopped alone
    would leave the others waiting in an all-reduce (the main one, unsaved)."""

    def __init__(self, dist=None, device: torch.device | None = None):
        self.dist, self.device = (dist if dist is not None and dist.ddp else None), device
        self.requested: list[str] = []
        self._ctx: Any = None

    def __enter__(self) -> StopRequests:
        self._ctx = stop_on_signal()
        self.requested = self._ctx.__enter__()
        return self

    def __exit__(self, *exc) -> bool | None:
        return self._ctx.__exit__(*exc)

    def halt(self, step: int, last: bool = False) -> str | None:
        """The signal to stop on now, if any."""
        if self.dist is None:
            return self.requested[0] if self.requested else None
        if not last and step % STOP_CHECK_EVERY:
            return None
        if not self.dist.any(bool(self.requested), self.device):
            return None
        return self.requested[0] if self.requested else "a signal to another process"
