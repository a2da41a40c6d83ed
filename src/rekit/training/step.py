"""How the training step runs on the hardware: compilation and padding granularity.

The arithmetic of a step lives in loop.py; this module only decides how it is executed, so the
same loop runs eager on a laptop and as CUDA graphs on a GPU.
"""

from __future__ import annotations

import torch

from rekit.runtime import compile_blocks

GRAPH_MODES = ("graphs", "graphs-inductor")  # whole-step CUDA graphs (training/graphs.py)


INDUCTOR_MIN_EPOCHS = 3  # graphs-inductor pays back its compilation after about 3 epochs (BENCHMARKS.md)


def resolve_compile(mode: str, device: torch.device, epochs: int = 1) -> str:
    """auto, from the work planned: on a GPU, whole-step CUDA graphs (graphs.py; one capture per
    padded shape, seconds in all), over inductor-fused layers when a fold trains for
    INDUCTOR_MIN_EPOCHS epochs or more (their 20-30 s of compiling is then paid back: 16 % faster
    steps, BENCHMARKS.md "Training throughput") and triton is installed; eager on a CPU.
    torch.compile's own modes stay options: with KLUE's varying lengths they recompile and
    re-record for minutes per fold, which a 2-3 minute fold never wins back."""
    if mode != "auto":
        return mode
    if device.type != "cuda":
        return "off"
    return "graphs-inductor" if epochs >= INDUCTOR_MIN_EPOCHS and _has_triton() else "graphs"


def _has_triton() -> bool:
    import importlib.util

    return importlib.util.find_spec("triton") is not None


def compile_forward(module: torch.nn.Module, mode: str):
    """The callable the training step runs. graphs: the module itself (its kernels are captured);
    graphs-inductor: the module with its repeated blocks compiled in place by inductor (see
    runtime.compile_blocks), captured the same way; torch.compile modes: dynamic=None (the first shape
    compiles static, the second marks the varying dimensions dynamic) with CUDA graphs recorded
    per padded shape by reduce-overhead."""
    if mode in ("off", "graphs"):
        return module
    if mode == "graphs-inductor":
        compile_blocks(module, dynamic=True)
        return module
    return torch.compile(module, mode=None if mode == "default" else mode)


def pad_multiple(requested: int, compile_mode: str, device: torch.device) -> int:
    """torch.compile modes: coarse (32) so few shapes are recorded; otherwise on CUDA 8 (tensor cores,
    and at most 32 graph shapes up to 256 tokens); CPU: none."""
    if requested > 0:
        return requested
    if device.type != "cuda":
        return 1
    return 8 if compile_mode in ("off", *GRAPH_MODES) else 32


def always_pad(compile_mode: str) -> bool:
    """Whether every batch keeps a padded position (Collator.always_pad): graphs-inductor only, so a
    compiled layer sees the same mask in the eager warm-up as in the capture."""
    return compile_mode == "graphs-inductor"
