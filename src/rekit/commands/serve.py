"""`rekit serve`: a trained run behind an HTTP API (FastAPI + uvicorn; `pip install "rekit[serve]"`)."""

from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path

from rekit.errors import RekitError


def _positive(kind):
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        if value <= 0:
            raise argparse.ArgumentTypeError(f"must be positive, got {text}")
        return value
    return parse


def _settings(args):
    from rekit.serve.model import check_path
    from rekit.serve.settings import ServeSettings, read_api_key
    from rekit.serve.validation import Limits

    if not Path(args.model).exists():
        raise RekitError(f"{args.model}: no such run directory or export")
    check_path(args.model)
    key_file = None
    if args.api_key_file:
        try:
            key = read_api_key(args.api_key_file)
        except OSError as e:
            raise RekitError(f"--api-key-file {args.api_key_file}: {e.strerror}") from None
        if not key:
            raise RekitError(f"--api-key-file {args.api_key_file} is empty; put the key in it")
        key_file = str(Path(args.api_key_file).resolve())
    if not 0 <= args.port <= 65535:
        raise RekitError(f"--port {args.port} is not a TCP port (0-65535)")
    limits = Limits(args.max_items, args.max_body_bytes, args.max_sentence_chars)
    return ServeSettings(str(Path(args.model).resolve()), args.device, args.max_batch_size, args.max_wait_ms,
                         limits, key_file, args.threads, args.type_constraints)


def serve(args) -> int:
    from rekit.serve import require_deps

    require_deps()
    import os

    import uvicorn

    from rekit.serve.settings import ENV_VAR

    settings = _settings(args)
    os.environ[ENV_VAR] = settings.to_env()  # each uvicorn worker builds its app (and loads the model) from it
    host = f"[{args.host}]" if ":" in args.host else args.host
    print(f"rekit serve: {args.model} at http://{host}:{args.port} ({args.workers} worker(s); API docs at "
          f"/docs; /readyz answers 200 once the model is loaded; Ctrl-C or SIGTERM stops after in-flight requests)",
          flush=True)
    received: list[int] = []
    # uvicorn shuts down gracefully on SIGTERM/SIGINT, then re-raises the signal to the handler it found:
    # this one, so a requested stop ends with exit code 0 instead of a signal death or a traceback.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda s, _frame: received.append(s))
    uvicorn.run("rekit.serve.app:app_from_env", factory=True, host=args.host, port=args.port, workers=args.workers,
                log_level=args.log_level, access_log=args.access_log,
                timeout_graceful_shutdown=args.shutdown_timeout)
    why = signal.Signals(received[0]).name if received else "the server stopped"
    print(f"rekit serve: stopped ({why})", file=sys.stderr)
    return 0


def register(sub) -> None:
    p = sub.add_parser("serve", help="serve a trained run over HTTP (dynamic batching, /docs, /metrics)",
                       description="An HTTP API for a trained run: POST /v1/predict, GET /v1/labels, /healthz, "
                       "/readyz, /metrics (Prometheus), docs at /docs. Needs the serve extra: pip install "
                       "\"rekit[serve]\". See README \"Serving\".")
    p.add_argument("model", metavar="RUN_OR_EXPORT", help="a run directory made by `rekit train`, or one fold model's")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1, this machine only)")
    p.add_argument("--port", type=int, default=8000, help="TCP port (default: 8000)")
    p.add_argument("--workers", type=_positive(int), default=1,
                   help="server processes; each loads the model and batches its own requests (default: 1)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N (default: auto)")
    p.add_argument("--threads", type=_positive(int),
                   help="CPU threads for the model (default: torch's, one per core); on a busy machine 1 can be "
                   "many times faster (BENCHMARKS.md \"Serving\")")
    p.add_argument("--type-constraints", action=argparse.BooleanOptionalAction, default=True,
                   help="a model trained with --type-constraints gives 0 to labels a row's (subject type, object "
                   "type) pair never took in training; --no-type-constraints serves its raw probabilities (default: on)")
    p.add_argument("--max-batch-size", type=_positive(int), default=64,
                   help="examples per model batch gathered from concurrent requests; a larger request runs alone, "
                   "so 1 serves one request at a time (default: 64)")
    p.add_argument("--max-wait-ms", type=float, default=5.0,
                   help="how long the first request of a batch may wait for others to join; it does not wait when "
                   "the previous batch was a single request and no other is being read (default: 5)")
    p.add_argument("--max-items", type=_positive(int), default=256, help="examples per request (default: 256)")
    p.add_argument("--max-body-bytes", type=_positive(int), default=1 << 20,
                   help="request body size; larger bodies are refused before they are read (default: 1048576)")
    p.add_argument("--max-sentence-chars", type=_positive(int), default=2000,
                   help="characters per sentence (default: 2000)")
    p.add_argument("--api-key-file", help="require this file's content as the key (Authorization: Bearer KEY or "
                   "X-API-Key: KEY) on /v1/* and /metrics; /healthz, /readyz and /docs stay open")
    p.add_argument("--shutdown-timeout", type=_positive(float), default=30.0,
                   help="on SIGTERM/Ctrl-C, seconds to let in-flight requests finish (default: 30)")
    p.add_argument("--log-level", default="info", choices=("critical", "error", "warning", "info", "debug"),
                   help="uvicorn's log level (default: info)")
    p.add_argument("--access-log", action="store_true", help="log every request (off by default: it costs under load)")
    p.set_defaults(func=serve)
