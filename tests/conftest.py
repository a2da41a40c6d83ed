import contextlib
import os
import socket
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


def make_tiny_bert_work(d: Path, seed: int) -> Path:
    """A training CSV and a local tiny BERT directory (random weights, tokenizer trained once and
    saved), for runs that must match exactly: a scratch tokenizer trained twice can differ."""
    import torch
    from transformers import BertModel

    from rekit.data.readers import write_csv
    from rekit.data.synthetic import make_splits
    from rekit.modeling import scratch

    train, _ = make_splits(seed=seed, n_train=160, n_test=10)
    write_csv(train, d / "train.csv")
    tok = scratch.train_tokenizer([r.sentence for r in train], 800)
    torch.manual_seed(0)
    BertModel(scratch.encoder_config("tiny", len(tok), 128)).save_pretrained(d / "tinybert")
    tok.save_pretrained(d / "tinybert")
    return d


def free_port() -> int:
    """A TCP port on the loopback that nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def one_process_ddp(monkeypatch, backend: str, **init):
    """A one-process group that rekit treats as DDP (Dist.active is forced true): DDP's hooks,
    buckets and collectives all run, on a host with one GPU or none. Yields the Dist to pass to fit."""
    import torch.distributed as td

    from rekit.training import distributed

    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.setenv("MASTER_PORT", str(free_port()))
    monkeypatch.setattr(distributed.Dist, "active", property(lambda self: True))
    td.init_process_group(backend, rank=0, world_size=1, **init)
    try:
        yield distributed.Dist(0, 1, 0, "ddp")
    finally:
        td.destroy_process_group()
