"""Prometheus text exposition (format 0.0.4), written here: counters and histograms, no dependency.

Every update happens on the server's event loop, so no locks. Each uvicorn worker process has its
own numbers (scrape the workers separately or run one worker when the totals matter).
"""

from __future__ import annotations

from bisect import bisect_left
from collections import defaultdict

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)


def _labels(names: tuple[str, ...], values: tuple[str, ...], extra: str = "") -> str:
    parts = [f'{n}="{_escape(v)}"' for n, v in zip(names, values)]
    if extra:
        parts.append(extra)
    return "{" + ",".join(parts) + "}" if parts else ""


def _escape(v: str) -> str:
    return v.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _num(x: float) -> str:
    return repr(float(x)) if x != int(x) else str(int(x))


class Counter:
    def __init__(self, name: str, help: str, labelnames: tuple[str, ...] = ()):
        self.name, self.help, self.labelnames = name, help, labelnames
        self.values: dict[tuple[str, ...], float] = defaultdict(float)

    def inc(self, *labels: str, by: float = 1.0) -> None:
        self.values[labels] += by

    def render(self) -> list[str]:
        out = [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} counter"]
        out += [f"{self.name}{_labels(self.labelnames, k)} {_num(v)}" for k, v in sorted(self.values.items())]
        return out


class Histogram:
    def __init__(self, name: str, help: str, buckets: tuple[float, ...], labelnames: tuple[str, ...] = ()):
        self.name, self.help, self.buckets, self.labelnames = name, help, buckets, labelnames
        self.counts: dict[tuple[str, ...], list[int]] = {}
        self.sums: dict[tuple[str, ...], float] = defaultdict(float)

    def observe(self, value: float, *labels: str) -> None:
        counts = self.counts.setdefault(labels, [0] * (len(self.buckets) + 1))
        counts[bisect_left(self.buckets, value)] += 1  # le is inclusive: value == bound lands in that bucket
        self.sums[labels] += value

    def render(self) -> list[str]:
        out = [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} histogram"]
        for key, counts in sorted(self.counts.items()):
            total = 0
            for bound, c in zip((*self.buckets, float("inf")), counts):
                total += c
                le = "+Inf" if bound == float("inf") else _num(bound)
                bucket = 'le="' + le + '"'
                out.append(f"{self.name}_bucket{_labels(self.labelnames, key, bucket)} {total}")
            out.append(f"{self.name}_sum{_labels(self.labelnames, key)} {_num(self.sums[key])}")
            out.append(f"{self.name}_count{_labels(self.labelnames, key)} {total}")
        return out


class ServerMetrics:
    """What /metrics shows: requests by path and status, latency, batch sizes, examples, errors."""

    def __init__(self) -> None:
        self.requests = Counter("rekit_requests_total", "HTTP requests by path and status code.", ("path", "status"))
        self.latency = Histogram("rekit_request_duration_seconds", "Time from request to response, by path.",
                                 LATENCY_BUCKETS, ("path",))
        self.batch_size = Histogram("rekit_batch_size", "Examples per model batch.", SIZE_BUCKETS)
        self.batch_seconds = Histogram("rekit_batch_duration_seconds", "Model time per batch.", LATENCY_BUCKETS)
        self.examples = Counter("rekit_examples_total", "Examples predicted.")
        self.errors = Counter("rekit_errors_total", "Refused or failed requests by kind.", ("kind",))

    def render(self) -> str:
        parts = (self.requests, self.latency, self.batch_size, self.batch_seconds, self.examples, self.errors)
        return "\n".join(line for m in parts for line in m.render()) + "\n"
