"""`rekit serve`: a trained model behind an HTTP API (FastAPI + uvicorn, the `rekit[serve]` extra).

model.py loads the model · validation.py turns request JSON into `Record`s · batching.py gathers
concurrent requests into one model batch · metrics.py is the Prometheus text · app.py wires them.
Only app.py imports fastapi; everything else is plain Python.
"""

from __future__ import annotations

from rekit.errors import RekitError

INSTALL_HINT = 'rekit serve needs FastAPI and uvicorn: pip install "rekit[serve]"'


def require_deps() -> None:
    """One clear line, not an ImportError traceback, when the serve extra is missing."""
    try:
        import fastapi  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError as e:
        raise RekitError(f"{INSTALL_HINT} ({e.name} is not installed)") from None
