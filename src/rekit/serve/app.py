"""The ASGI app: routes, error bodies, readiness, authentication and request metrics.

Authentication (when an API key file is given) covers /v1/* and /metrics; /healthz, /readyz,
/docs and /openapi.json stay open so that probes and readers of the docs need no key.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import time
from contextlib import asynccontextmanager

from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse

from rekit.serve import schema
from rekit.serve.batching import Batcher
from rekit.serve.metrics import ServerMetrics
from rekit.serve.model import ServedModel, load_model
from rekit.serve.settings import ServeSettings, read_api_key
from rekit.serve.validation import Problem, RequestProblems, parse_examples

log = logging.getLogger("uvicorn.error")  # configured by uvicorn: these lines show with its own
OPEN_PATHS = ("/healthz", "/readyz", "/docs", "/docs/oauth2-redirect", "/openapi.json", "/redoc")
METRIC_PATHS = ("/v1/predict", "/v1/labels", "/healthz", "/readyz", "/metrics")


class ServerState:
    def __init__(self, settings: ServeSettings):
        self.settings = settings
        self.metrics = ServerMetrics()
        self.model: ServedModel | None = None
        self.load_error: str | None = None
        self.api_key = read_api_key(settings.api_key_file) if settings.api_key_file else None
        self.batcher = Batcher(self._predict, settings.max_batch_size, settings.max_wait_ms, self._on_batch)

    def _predict(self, records):
        return self.model.predict_proba(records)

    def _on_batch(self, n: int, seconds: float) -> None:
        self.metrics.batch_size.observe(n)
        self.metrics.batch_seconds.observe(seconds)
        self.metrics.examples.inc(by=n)

    async def load(self) -> None:
        """Load in the model thread (the loop keeps answering /healthz); /readyz turns 200 after."""
        try:
            self.model = await self.batcher.run_in_worker(load_model, self.settings.model_path, self.settings.device,
                                                          self.settings.threads, self.settings.type_constraints)
            log.info("model loaded: %s (%d labels, label version %s)", self.settings.model_path,
                     len(self.model.labels), self.model.version)
        except Exception as e:  # noqa: BLE001 - reported by /readyz; the process stays up to say why
            self.load_error = f"{type(e).__name__}: {e}"
            log.error("could not load %s: %s", self.settings.model_path, self.load_error)


class Guard:
    """Plain ASGI middleware: the API key check, then per-request counts and latency."""

    def __init__(self, app, state: ServerState):
        self.app, self.state = app, state

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        path, t0, status = scope["path"], time.perf_counter(), [500]

        async def send_status(message):
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            if self.state.api_key is not None and path not in OPEN_PATHS and not self._authorized(scope):
                self.state.metrics.errors.inc("unauthorized")
                response = JSONResponse({"error": "missing or wrong API key: send 'Authorization: Bearer KEY' "
                                                  "or 'X-API-Key: KEY'"}, 401, headers={"WWW-Authenticate": "Bearer"})
                await response(scope, receive, send_status)
            else:
                await self.app(scope, receive, send_status)
        finally:
            label = path if path in METRIC_PATHS else "other"
            self.state.metrics.requests.inc(label, str(status[0]))
            self.state.metrics.latency.observe(time.perf_counter() - t0, label)

    def _authorized(self, scope) -> bool:
        given = b""
        for name, value in scope["headers"]:
            if name == b"authorization" and value[:7].lower() == b"bearer ":
                given = value[7:].strip()
            elif name == b"x-api-key":
                given = value.strip()
        return self.state.api_key is not None and hmac.compare_digest(given, self.state.api_key)


async def read_body(request: Request, limit: int) -> bytes:
    """The body, refused with 413 as soon as it is known to pass `limit` bytes (before reading it all)."""
    too_big = RequestProblems(413, [Problem(None, "body", f"the request body is larger than {limit:,} bytes "
                                            "(--max-body-bytes)", "body_too_large")])
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise too_big
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise too_big
        chunks.append(chunk)
    return b"".join(chunks)


def _not_ready(state: ServerState) -> JSONResponse:
    if state.load_error:
        return JSONResponse({"status": "failed", "error": state.load_error}, 503)
    return JSONResponse({"status": "loading"}, 503, headers={"Retry-After": "1"})


def _predictions(model: ServedModel, records, probs, top_k: int | None) -> dict:
    labels, out = model.labels, []
    for r, p in zip(records, probs):
        best = int(p.argmax())
        if top_k is None:
            dist = {lab: float(x) for lab, x in zip(labels, p)}
        else:
            dist = {labels[k]: float(p[k]) for k in p.argsort()[::-1][:top_k]}
        out.append({"id": r.id, "label": labels[best], "probabilities": dist})
    return {"label_version": model.version, "predictions": out}


def add_routes(app: FastAPI, state: ServerState) -> None:
    @app.post("/v1/predict", summary="Relation labels and probabilities for a list of examples",
              openapi_extra=schema.PREDICT_REQUEST, responses=schema.PREDICT_RESPONSES)
    async def predict(request: Request, top_k: int | None = Query(
            None, ge=1, description="return only the k most probable labels of each example (default: all, "
            "in label order)")):
        if state.model is None:
            return _not_ready(state)
        with state.batcher.arriving():  # a batch being gathered waits for this request
            body = await read_body(request, state.settings.limits.max_body_bytes)
            try:
                data = json.loads(body)
            except (ValueError, UnicodeDecodeError) as e:
                raise RequestProblems(400, [Problem(None, "body", f"the body is not valid JSON: {e}",
                                                    "bad_json")]) from None
            records = parse_examples(data, state.settings.limits)
        probs = await state.batcher.submit(records)
        return JSONResponse(_predictions(state.model, records, probs, top_k))

    @app.get("/v1/labels", summary="The model's label list, in probability-column order")
    async def labels():
        if state.model is None:
            return _not_ready(state)
        return {"labels": state.model.labels, "label_version": state.model.version}

    @app.get("/healthz", summary="Liveness: the process answers")
    async def healthz():
        return {"status": "ok"}

    @app.get("/readyz", summary="Readiness: 200 once the model is loaded, 503 before (or if loading failed)")
    async def readyz():
        if state.model is None:
            return _not_ready(state)
        return {"status": "ready", "model": state.settings.model_path, "labels": len(state.model.labels),
                "label_version": state.model.version}

    @app.get("/metrics", summary="Prometheus metrics (text format)", response_class=PlainTextResponse)
    async def metrics():
        return PlainTextResponse(state.metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")


def add_error_handlers(app: FastAPI, state: ServerState) -> None:
    @app.exception_handler(RequestProblems)
    async def problems(request: Request, exc: RequestProblems):
        for kind in {p.kind for p in exc.problems}:
            state.metrics.errors.inc(kind)
        return JSONResponse(exc.body(), exc.status)

    @app.exception_handler(RequestValidationError)
    async def bad_query(request: Request, exc: RequestValidationError):
        fields = [(".".join(str(x) for x in e.get("loc", ())), e.get("msg", "invalid")) for e in exc.errors()]
        probs = [Problem(None, field, f"{field}: {msg}", "bad_query") for field, msg in fields]
        return await problems(request, RequestProblems(422, probs or [Problem(None, "query", "invalid", "bad_query")]))

    @app.exception_handler(Exception)
    async def internal(request: Request, exc: Exception):
        log.exception("prediction failed")
        state.metrics.errors.inc("internal")
        return JSONResponse({"error": f"internal error: {type(exc).__name__}: {exc}"}, 500)


def create_app(settings: ServeSettings) -> FastAPI:
    state = ServerState(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        state.batcher.start()
        loading = asyncio.create_task(state.load())
        yield
        await loading
        await state.batcher.close()  # uvicorn has let the in-flight requests finish by now

    from rekit import __version__

    app = FastAPI(title="rekit", version=__version__, lifespan=lifespan,
                  description="Relation extraction with a trained rekit model. Offsets are character offsets "
                  "with an exclusive end: sentence[start:end] == text.")
    app.state.rekit = state
    add_routes(app, state)
    add_error_handlers(app, state)
    app.add_middleware(Guard, state=state)
    return app


def app_from_env() -> FastAPI:
    """The factory uvicorn calls in each worker process (`rekit serve` sets the environment)."""
    return create_app(ServeSettings.from_env())
