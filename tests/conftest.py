import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never wait on a hub from tests
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "klue-re"


@pytest.fixture(scope="session")
def klue_dir() -> Path:
    if not (SHARED / "train.csv").is_file():
        pytest.skip(f"KLUE-RE data not found at {SHARED}")
    return SHARED
