"""Load test of `rekit serve` on the loopback: dynamic batching against one request at a time.

Starts the real server (a subprocess, 127.0.0.1 only) twice on the same run: "batched"
(--max-batch-size 64, --max-wait-ms 5 by default) and "one-at-a-time" (--max-batch-size 1
--max-wait-ms 0: every request is its own model call, the hand-written Flask app's behaviour).
For each, 1, 8 and 64 concurrent clients (one keep-alive connection each) send a fixed number of
requests of --items examples. Reported per row: requests/s, examples/s, p50/p95/p99 latency,
errors (must be 0), the server's RSS before and after, and the mean model batch size (from
/metrics). For reference, `rekit predict`'s examples/s on the same rows (the library's batched
predict_proba in this process, model loading excluded), on the same --device.

The clients are a minimal HTTP/1.1 client written here (--client raw, the default): httpx's
AsyncClient (--client httpx, what the first tables in BENCHMARKS.md used) costs the load
generator about 10 ms of CPU per request at 64 connections, on the cores the server needs.

  python benchmarks/serve_load.py --train                      # trains a scratch-small 2-fold run first
  python benchmarks/serve_load.py --run RUN_DIR --requests 400 --out results/serve.json
  python benchmarks/serve_load.py --train --device cuda        # server and reference on the GPU
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src"
sys.path.insert(0, str(SRC))

from rekit.data.readers import read_records, write_csv  # noqa: E402 (after the sys.path insert)
from rekit.data.synthetic import make_splits  # noqa: E402

MODES = {"batched": None, "one-at-a-time": ["--max-batch-size", "1", "--max-wait-ms", "0"]}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def machine(device: str) -> dict:
    """What ran the benchmark: the CPU model and cores, the GPU (with --device cuda), the load average."""
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    out = {"cpu": cpu, "cpus": os.cpu_count(), "load_average_1m": os.getloadavg()[0], "device": device}
    if device.startswith("cuda"):
        import torch

        if torch.cuda.is_available():
            out["gpu"] = torch.cuda.get_device_name(torch.device(device))
    return out


def describe(m: dict) -> str:
    gpu = f", GPU {m['gpu']}" if "gpu" in m else ""
    return f"{m['cpu']} ({m['cpus']} CPUs){gpu}; device {m['device']}; load average {m['load_average_1m']:.1f}"


def _children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(k) for k in path.read_text().split()] if path.exists() else []


def cpu_seconds(pid: int, main_thread_only: bool = False) -> float:
    """CPU time (user + system) of a process and its children, or of its main thread alone (the
    server's event loop; the model runs on another thread)."""
    stat = Path(f"/proc/{pid}/task/{pid}/stat" if main_thread_only else f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2:].split()  # after "pid (comm) ": state is fields[0]
    own = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return own if main_thread_only else own + sum(cpu_seconds(k) for k in _children(pid))


def rss_mib(pid: int) -> float:
    """The process's resident memory plus its children's (the uvicorn workers with --workers > 1)."""
    total = float("nan")
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            total = int(line.split()[1]) / 1024
    return total + sum(rss_mib(k) for k in _children(pid))


def env() -> dict:
    return {**os.environ, "PYTHONPATH": f"{SRC}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}


def train_run(work: Path, size: str, folds: int, device: str) -> Path:
    train, _ = make_splits(seed=7, n_train=400, n_test=10)
    write_csv(train, work / "train.csv")
    run = work / "run"
    subprocess.run([sys.executable, "-m", "rekit.cli", "train", "--train", str(work / "train.csv"), "--output",
                    str(run), "--model", "scratch", "--scratch-size", size, "--folds", str(folds), "--epochs", "1",
                    "--device", device, "--no-progress", "--overwrite"], check=True, env=env(), stdout=subprocess.DEVNULL)
    return run


def test_items(work: Path, n: int) -> list[dict]:
    _, test = make_splits(seed=11, n_train=10, n_test=n)
    write_csv(test, work / "test.csv")
    records, _ = read_records(work / "test.csv")
    return [{k: v for k, v in r.to_dict().items() if k not in ("label", "source")} for r in records]


class Server:
    def __init__(self, run: Path, flags: list[str], log: Path, device: str = "cpu"):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        with open(log, "wb") as out:
            self.proc = subprocess.Popen([sys.executable, "-m", "rekit.cli", "serve", str(run), "--port",
                                          str(self.port), "--device", device, *flags], stdout=out,
                                         stderr=subprocess.STDOUT, env=env())
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and self.proc.poll() is None:
            try:
                if httpx.get(self.url + "/readyz", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        self.stop()
        raise SystemExit(f"the server did not become ready; see {log}")

    def metric(self, name: str) -> float:
        text = httpx.get(self.url + "/metrics", timeout=10).text
        return sum(float(ln.rsplit(" ", 1)[1]) for ln in text.splitlines() if ln.startswith(name + " "))

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()


class RawClient:
    """One keep-alive HTTP/1.1 connection that POSTs JSON: a few lines of asyncio streams, so that
    the load generator costs far less CPU per request than the server it measures."""

    def __init__(self, url: str):
        host, port = url.split("//", 1)[1].rsplit(":", 1)
        self.host, self.port = host, int(port)
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def post(self, path: str, body) -> tuple[int, dict]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        data = json.dumps(body).encode()
        self.writer.write(f"POST {path} HTTP/1.1\r\nhost: {self.host}\r\ncontent-type: application/json\r\n"
                          f"content-length: {len(data)}\r\n\r\n".encode() + data)
        assert self.reader is not None
        head = (await self.reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
        headers = dict(line.split(":", 1) for line in head[1:] if ":" in line)
        length = {k.strip().lower(): v.strip() for k, v in headers.items()}.get("content-length")
        if length is None:
            raise ConnectionError(f"no content-length in the response: {head[0]}")
        payload = await self.reader.readexactly(int(length))
        return int(head[0].split()[1]), json.loads(payload)

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


async def load(url: str, bodies: list[list[dict]], clients: int,
               kind: str = "raw") -> tuple[list[float], int, float]:
    """`clients` workers (one connection each) share the list of request bodies; -> (latencies s, errors, wall s)."""
    latencies, errors, next_i = [], 0, 0
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=120) as shared:
        async def post(raw: RawClient | None, body) -> tuple[int, dict]:
            if raw is not None:
                return await raw.post("/v1/predict", body)
            r = await shared.post("/v1/predict", json=body)
            return r.status_code, r.json()

        async def worker():
            nonlocal errors, next_i
            raw = RawClient(url) if kind == "raw" else None
            while next_i < len(bodies):
                body, next_i = bodies[next_i], next_i + 1
                t0 = time.perf_counter()
                try:
                    status, answer = await post(raw, body)
                    ok = status == 200 and len(answer["predictions"]) == len(body)
                except (httpx.HTTPError, OSError, asyncio.IncompleteReadError, ValueError):
                    ok = False
                    if raw is not None:
                        await raw.close()  # reconnect for the next request
                latencies.append(time.perf_counter() - t0)
                errors += not ok
            if raw is not None:
                await raw.close()

        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(clients)))
        return latencies, errors, time.perf_counter() - t0


def bench_mode(run: Path, mode: str, items: list[dict], args, log: Path) -> list[dict]:
    flags = MODES[mode] or ["--max-batch-size", str(args.max_batch_size), "--max-wait-ms", str(args.max_wait_ms)]
    if args.threads:
        flags = [*flags, "--threads", str(args.threads)]
    if args.workers > 1:
        flags = [*flags, "--workers", str(args.workers)]
    server = Server(run, flags, log, args.device)
    rows = []
    try:
        bodies = [[items[(i * args.items + j) % len(items)] for j in range(args.items)] for i in range(args.requests)]
        asyncio.run(load(server.url, bodies[:16], 4, args.client))  # warm-up: first batches, connections
        rss0 = rss_mib(server.proc.pid)
        for clients in args.clients:
            rows.append({"mode": mode, "clients": clients, **level(server, bodies, clients, args), "rss_before_mib": rss0,
                         "rss_after_mib": rss_mib(server.proc.pid)})
            print(table_row(rows[-1]), flush=True)
    finally:
        code = server.stop()
    if code != 0:
        raise SystemExit(f"the server exited with {code}; see {log}")
    return rows


def level(server: Server, bodies: list[list[dict]], clients: int, args) -> dict:
    """One concurrency level: throughput, latency, errors, mean batch and the server's CPU use."""
    pid, one = server.proc.pid, args.workers == 1
    b0, n0 = server.metric("rekit_batch_size_count"), server.metric("rekit_batch_size_sum")
    cpu0, loop0, mine0 = cpu_seconds(pid), cpu_seconds(pid, main_thread_only=True), sum(os.times()[:2])
    lat, errors, wall = asyncio.run(load(server.url, bodies, clients, args.client))
    cpu, loop = cpu_seconds(pid) - cpu0, cpu_seconds(pid, main_thread_only=True) - loop0
    client_cpu = sum(os.times()[:2]) - mine0  # this process: the load generator
    batches = server.metric("rekit_batch_size_count") - b0
    examples = server.metric("rekit_batch_size_sum") - n0
    p50, p95, p99 = np.percentile(np.array(lat) * 1000, [50, 95, 99])
    return {"requests": len(bodies), "requests_per_s": len(bodies) / wall,
            "examples_per_s": len(bodies) * args.items / wall, "p50_ms": p50, "p95_ms": p95, "p99_ms": p99,
            "errors": errors,
            # each scrape of /metrics reaches one worker, and the main thread is the supervisor's:
            # with --workers > 1 neither the mean batch nor the event loop's share is known
            "mean_batch": examples / max(batches, 1) if one else float("nan"),
            "client_cpu_pct": 100 * client_cpu / wall, "server_cpu_pct": 100 * cpu / wall,
            "loop_ms_per_request": 1000 * loop / len(bodies) if one else float("nan")}


def predict_reference(run: Path, items: list[dict], batch: int, threads: int | None, device: str = "cpu") -> float:
    """examples/s of the library's batched predict_proba (what `rekit predict` runs), warm."""
    import torch

    from rekit.data.schema import Record
    from rekit.ensemble import Ensemble

    if threads:
        torch.set_num_threads(threads)
    records = [Record.from_dict(d) for d in items]
    ens = Ensemble.load(run, device=device, batch_size=batch)
    ens.predict_proba(records[:8])
    t0 = time.perf_counter()
    ens.predict_proba(records)
    return len(records) / (time.perf_counter() - t0)


HEADER = ("| mode | clients | requests | req/s | examples/s | p50 ms | p95 ms | p99 ms | errors | mean batch "
          "| client CPU % | server CPU % | event loop ms/request | RSS before → after (MiB) |\n"
          "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")


def table_row(r: dict) -> str:
    return (f"| {r['mode']} | {r['clients']} | {r['requests']} | {r['requests_per_s']:.1f} | "
            f"{r['examples_per_s']:.1f} | {r['p50_ms']:.1f} | {r['p95_ms']:.1f} | {r['p99_ms']:.1f} | "
            f"{r['errors']} | {r['mean_batch']:.1f} | {r['client_cpu_pct']:.0f} | {r['server_cpu_pct']:.0f} | "
            f"{r['loop_ms_per_request']:.2f} | "
            f"{r['rss_before_mib']:.0f} → {r['rss_after_mib']:.0f} |")


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--run", type=Path, help="a trained run directory (else --train)")
    p.add_argument("--train", action="store_true", help="train a scratch run to serve first")
    p.add_argument("--scratch-size", default="small", help="with --train (default: small)")
    p.add_argument("--folds", type=int, default=2, help="with --train (default: 2)")
    p.add_argument("--requests", type=int, default=256, help="requests per concurrency level (default: 256)")
    p.add_argument("--items", type=int, default=1, help="examples per request (default: 1)")
    p.add_argument("--clients", type=int, nargs="+", default=[1, 8, 64], help="concurrency levels (default: 1 8 64)")
    p.add_argument("--max-batch-size", type=int, default=64, help="the batched server's (default: 64)")
    p.add_argument("--max-wait-ms", type=float, default=5.0, help="the batched server's (default: 5)")
    p.add_argument("--threads", type=int, help="torch CPU threads, for the server and the reference (default: torch's)")
    p.add_argument("--workers", type=int, default=1,
                   help="server processes (rekit serve --workers; mean batch is then not reported) (default: 1)")
    p.add_argument("--device", default="cpu", help="the server's and the reference's: cpu, cuda, cuda:N (default: cpu)")
    p.add_argument("--client", choices=("raw", "httpx"), default="raw",
                   help="the load generator: a minimal HTTP/1.1 client (default) or httpx.AsyncClient")
    p.add_argument("--out", type=Path, help="write the rows as JSON here, and the markdown beside it (.md)")
    args = p.parse_args()
    if not args.run and not args.train:
        p.error("give --run RUN_DIR or --train")
    return args


def main() -> int:
    args = parse_args()
    work = Path(tempfile.mkdtemp(prefix="serve-load-"))
    run = args.run or train_run(work, args.scratch_size, args.folds, args.device)
    items = test_items(work, 512)
    start = machine(args.device)
    lines = [f"machine: {describe(start)}; run {run}; {args.requests} requests of {args.items} example(s) per "
             f"level; threads {args.threads or 'default'}; workers {args.workers}; client {args.client}"]
    print(lines[0], flush=True)
    ref = predict_reference(run, items, 512, args.threads, args.device)
    lines += [f"rekit predict (library predict_proba, batch 512, warm): {ref:.1f} examples/s", "", HEADER]
    print("\n".join(lines[1:]), flush=True)
    rows = [r for mode in MODES for r in bench_mode(run, mode, items, args, work / f"{mode}.log")]
    end = os.getloadavg()[0]
    lines += [table_row(r) for r in rows]
    lines += ["", f"load average (1 min) {start['load_average_1m']:.1f} at the start, {end:.1f} at the end"]
    print(lines[-1], flush=True)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        meta = {"machine": start, "load_average_1m_end": end, "client": args.client, "threads": args.threads,
                "workers": args.workers, "max_wait_ms": args.max_wait_ms}
        args.out.write_text(json.dumps({**meta, "predict_examples_per_s": ref, "rows": rows}, indent=2) + "\n")
        args.out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    return 1 if any(r["errors"] for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
