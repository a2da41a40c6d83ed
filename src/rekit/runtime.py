"""Device, precision and seeding: the few decisions every stage that runs a model shares."""

from __future__ import annotations

import contextlib
import os
import random

import numpy as np
import torch

from rekit.errors import ConfigError


def resolve_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"unknown device {name!r}; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"--device {name}: CUDA is not available on this machine")
    return device


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """None = plain fp32. Mixed precision only on CUDA: CPU autocast is slower than fp32 here."""
    if device.type != "cuda" or precision == "fp32":
        return None
    if precision == "auto":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return {"bf16": torch.bfloat16, "fp16": torch.float16}[precision]


def autocast(device: torch.device, dtype: torch.dtype | None, cache: bool = True):
    """Mixed precision, or nothing for dtype=None. cache=False: no cache of weight casts (a CUDA
    graph capture must not keep casts that another capture would reuse)."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype, cache_enabled=cache)


def seed_everything(seed: int, deterministic: bool = False) -> None:
    """Seed Python, NumPy and torch. Call before building a model: init draws from these RNGs."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False


def compile_blocks(module: torch.nn.Module, **compile_kwargs) -> int:
    """Regional compilation: every block of a run of identical blocks (a ModuleList of one class,
    such as an encoder's layers) is compiled in place. The blocks share one compiled graph (their
    parameters are its inputs), so a 24-layer encoder compiles one layer's forward and backward
    instead of the whole network's; dynamic=True compiles it once for all sequence lengths.
    The state-dict keys do not change. -> the number of blocks compiled."""
    done: list[str] = []
    for name, child in module.named_modules():
        if any(name.startswith(prefix + ".") for prefix in done):
            continue  # inside a block already compiled
        if isinstance(child, torch.nn.ModuleList) and len(child) > 1 and len({type(m) for m in child}) == 1:
            for block in child:
                block.compile(**compile_kwargs)
            done += [f"{name}.{i}" if name else str(i) for i in range(len(child))]
    return len(done)
