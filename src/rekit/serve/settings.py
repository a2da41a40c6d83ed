"""Everything a server process needs, as one JSON-able value (uvicorn workers get it by environment)."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field

from rekit.serve.validation import Limits

ENV_VAR = "REKIT_SERVE_SETTINGS"


@dataclass(frozen=True)
class ServeSettings:
    model_path: str
    device: str = "auto"
    max_batch_size: int = 64  # examples per model batch (a larger request runs alone)
    max_wait_ms: float = 5.0  # the longest the first request of a batch waits for others
    limits: Limits = field(default_factory=Limits)
    api_key_file: str | None = None  # None: no authentication
    threads: int | None = None  # torch CPU threads for the model (None: torch's default)
    type_constraints: bool = True  # apply the model's type-pair constraints, if it has them

    def to_env(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_env(cls) -> ServeSettings:
        raw = os.environ.get(ENV_VAR)
        if not raw:
            raise RuntimeError(f"{ENV_VAR} is not set; start the server with `rekit serve`")
        d = json.loads(raw)
        return cls(**{**d, "limits": Limits(**d["limits"])})


def read_api_key(path: str) -> bytes:
    """The key is the file's content without surrounding whitespace (a trailing newline is common)."""
    with open(path, "rb") as f:
        return f.read().strip()
