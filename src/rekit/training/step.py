"""How the training step runs on the hardware: compilation and padding granularity.

The arithmetic of a step lives in loop.py; this module only decides how it is executed, so the
same loop runs eager on a laptop and as CUDA graphs on a GPU.
"""

from __future__ import annotations

import torch


def resolve_compile(mode: str, device: torch.device) -> str:
    """auto = eager, measured (BENCHMARKS.md, "Training throughput"): on an H200 a RoBERTa-large
    step compiled with CUDA graphs runs ~4x faster than eager at one fixed shape, but with
    KLUE's varying lengths compiling and recording cost ~3 minutes per fold and 150 steps
    later the rate was still that of eager; a KLUE-sized fold (~2-3 minutes eager) never wins
    that back. `--compile reduce-overhead` is there for long runs."""
    if mode == "auto":
        return "off"
    return mode


def compile_forward(module: torch.nn.Module, mode: str):
    """The callable the training step runs. dynamic=None: the first shape compiles static, the
    second marks the varying dimensions dynamic, so compilations stay few; CUDA graphs are then
    recorded per padded shape (bounded by --pad-multiple)."""
    if mode == "off":
        return module
    return torch.compile(module, mode=None if mode == "default" else mode)


def pad_multiple(requested: int, compile_mode: str, device: torch.device) -> int:
    """Compiled: coarse (32) so few shapes are recorded; eager CUDA: 8 for tensor cores; CPU: none."""
    if requested > 0:
        return requested
    if device.type != "cuda":
        return 1
    return 32 if compile_mode != "off" else 8
