"""What the loop tells the user while it runs: the progress bar, the metrics log and the
training throughput between evaluations. Nothing here touches the device."""

from __future__ import annotations

import json
import time
from pathlib import Path

from tqdm.auto import tqdm


class MetricsLog:
    """Append-only JSON Lines, flushed per line so a crash keeps every finished evaluation.

    A kill can tear the last line; `rundir.prune_metrics` drops it (and replayed rows) on resume."""

    def __init__(self, path: Path, **fixed):
        self.path, self.fixed = path, fixed

    def write(self, row: dict) -> None:
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps({**self.fixed, **row}) + "\n")


class Throughput:
    """Examples and tokens trained since the last evaluation, and the seconds they took
    (evaluation and saving are not training time: `restart` after them)."""

    def __init__(self, lengths: list[int]):
        self.lengths = lengths
        self.restart()

    def restart(self) -> None:
        self.t, self.samples, self.tokens = time.perf_counter(), 0, 0

    def add(self, step_batch: list[int]) -> None:
        self.samples += len(step_batch)
        self.tokens += sum(self.lengths[i] for i in step_batch)

    def row(self) -> dict:
        seconds = time.perf_counter() - self.t
        return {"train_samples": self.samples, "train_tokens": self.tokens, "train_seconds": round(seconds, 4),
                "samples_per_s": round(self.samples / max(seconds, 1e-9), 1)}


def progress_bar(total: int, initial: int, desc: str, enabled: bool, position: int | None = None) -> tqdm:
    return tqdm(total=total, initial=initial, desc=desc, disable=not enabled, dynamic_ncols=True, leave=False,
                position=position)
