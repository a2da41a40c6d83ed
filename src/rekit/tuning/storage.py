"""Where a study lives: an SQLite file in the study directory, or any SQLAlchemy database URL.

Both go through Optuna's RDBStorage, so the same code path (and the same heartbeat-based recovery
of trials whose worker died) serves one machine and many:

* SQLite: every worker process opens the file; writes are serialised by SQLite's file lock. A
  trial writes a handful of rows per evaluation, so with a generous busy timeout (below) several
  workers never see "database is locked" (measured: see tests/test_tune.py and the report of the
  change that added this). SQLite over a network file system is not safe: use a server there.
* PostgreSQL (or MySQL): `postgresql://user:password@host:5432/db`, driver psycopg2 or psycopg 3.

A URL can hold a password; it is handed to worker processes through the environment
(`REKIT_TUNE_STORAGE`), never on their command line, and written to study.json only masked.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

from rekit.errors import ConfigError

STORAGE_ENV = "REKIT_TUNE_STORAGE"
DB_FILE = "study.db"
SQLITE_BUSY_TIMEOUT_S = 120  # how long a writer waits for the file lock before "database is locked"


def default_url(study_dir: Path) -> str:
    return f"sqlite:///{Path(study_dir).resolve() / DB_FILE}"


def mask(url: str) -> str:
    """The URL with any password replaced by ***, for files and messages."""
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - a URL SQLAlchemy cannot parse has no password we can find
        return url


def has_password(url: str) -> bool:
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).password is not None
    except Exception:  # noqa: BLE001
        return False


def _engine_kwargs(url: str) -> dict:
    if url.startswith("sqlite"):
        return {"connect_args": {"timeout": SQLITE_BUSY_TIMEOUT_S}}
    # A server may close idle connections between long trials: test each one before use.
    return {"pool_pre_ping": True}


def with_driver(url: str) -> str:
    """`postgresql://` means psycopg (v3) to SQLAlchemy >= 2.1 and psycopg2 before; use whichever is
    installed (rekit's test extra brings psycopg2-binary)."""
    import importlib.util

    if url.startswith("postgresql://") and importlib.util.find_spec("psycopg") is None \
            and importlib.util.find_spec("psycopg2") is not None:
        return "postgresql+psycopg2://" + url[len("postgresql://"):]
    return url


def retry_callback(retries: int):
    """Optuna's callback that re-queues a failed trial (a WAITING copy with the same parameters),
    under its name since Optuna 4.9, else its older one."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "experimental" since Optuna 2.8
        try:
            from optuna.storages import RetryHeartbeatStaleTrialCallback as Retry
        except ImportError:
            from optuna.storages import RetryFailedTrialCallback as Retry
        return Retry(max_retry=retries)


def open_storage(url: str, heartbeat: int = 60, retries: int = 2):
    """RDBStorage with heartbeats: a RUNNING trial that misses two heartbeats is failed and re-queued
    (up to `retries` times) by the next worker that starts a trial."""
    import inspect

    from optuna.storages import RDBStorage

    # The keyword was renamed in Optuna 4.9 (failed_trial_callback -> heartbeat_stale_trial_callback).
    keyword = "heartbeat_stale_trial_callback" if "heartbeat_stale_trial_callback" in \
        inspect.signature(RDBStorage).parameters else "failed_trial_callback"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # heartbeats are "experimental" since Optuna 2.9
        try:
            return RDBStorage(with_driver(url), engine_kwargs=_engine_kwargs(url), heartbeat_interval=heartbeat,
                              grace_period=2 * heartbeat, **{keyword: retry_callback(retries)})
        except ImportError as e:
            raise ConfigError(f"storage {mask(url)}: the database driver is not installed ({e}); for PostgreSQL: "
                              "pip install psycopg2-binary (or psycopg[binary])") from None
        except Exception as e:  # noqa: BLE001 - SQLAlchemy's errors; say which storage and why in one line
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise ConfigError(f"cannot open study storage {mask(url)}: {first}") from None


def url_for(study_dir: Path, given: str | None) -> str:
    """The storage URL: the one given, else the worker's environment, else SQLite in the study dir."""
    return given or os.environ.get(STORAGE_ENV) or default_url(study_dir)
