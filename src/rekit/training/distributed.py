"""Several GPUs (or CPU processes) through torchrun: data-parallel folds or one fold per process.

rekit starts no processes itself. `torchrun --nproc-per-node N -m rekit.cli train ...` (or
`torchrun --nnodes M --node-rank R --rdzv-endpoint HOST:PORT ...` across machines) starts N
copies; each reads RANK / WORLD_SIZE / LOCAL_RANK from the environment that torchrun sets, and
this module turns that into a process group and a device.

  --parallel folds   fold k is trained by rank k % WORLD_SIZE; rank 0 merges the out-of-fold
                     predictions when all are done. No gradient traffic at all.
  --parallel ddp     every fold is trained by all ranks together (DistributedDataParallel): each
                     optimizer step's batch is split across ranks, gradients are averaged.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist

from rekit.errors import ConfigError


@dataclass(frozen=True)
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    mode: str = "none"  # none | folds | ddp

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world > 1

    @property
    def ddp(self) -> bool:
        """Several processes training each fold together."""
        return self.active and self.mode == "ddp"

    def barrier(self) -> None:
        if self.active:
            dist.barrier()

    def any(self, flag: bool, device: torch.device) -> bool:
        """True on every rank if `flag` is true on any rank (e.g. early stop decided on rank 0)."""
        if not self.active:
            return flag
        t = torch.tensor([1.0 if flag else 0.0], device=device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return bool(t.item())

    def owns_fold(self, k: int) -> bool:
        return self.mode != "folds" or k % self.world == self.rank

    def shard(self, idx: list[int]) -> list[int]:
        """This rank's part of one optimizer step's examples (ddp); everything otherwise."""
        return idx[self.rank :: self.world] if self.mode == "ddp" else idx

    def gather_rows(self, mine: np.ndarray, n: int, device: torch.device) -> np.ndarray:
        """All n rows on every rank, from each rank's `shard(range(n))` rows (ddp evaluation)."""
        local = torch.from_numpy(mine).to(device)
        buf = local.new_zeros((-(-n // self.world), *local.shape[1:]))  # the largest share: all_gather wants one size
        buf[: len(local)] = local
        parts = [torch.empty_like(buf) for _ in range(self.world)]
        dist.all_gather(parts, buf)
        out = np.empty((n, *mine.shape[1:]), dtype=mine.dtype)
        for r, part in enumerate(parts):
            out[r :: self.world] = part[: len(range(r, n, self.world))].cpu().numpy()
        return out

    def shards(self, idx: list[int]) -> list[list[int]]:
        """Every rank's part of one step's examples (ddp): what all ranks must pad alike."""
        return [idx[r :: self.world] for r in range(self.world)] if self.mode == "ddp" else [idx]


def env_rank() -> int:
    """This process's rank as torchrun set it (0 outside torchrun)."""
    return int(os.environ.get("RANK") or 0)


def from_env(parallel: str, device_name: str) -> tuple[Dist, str]:
    """Read torchrun's environment; init the process group; return (Dist, device name to use)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist(), device_name
    if parallel == "none":
        raise ConfigError(f"started with WORLD_SIZE={world} (torchrun) but --parallel none; use --parallel folds or ddp")
    rank, local = env_rank(), int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = device_name in ("auto", "cuda") and torch.cuda.is_available()
    if use_cuda:
        torch.cuda.set_device(local)
        device_name = f"cuda:{local}"
    elif device_name == "auto":
        device_name = "cpu"
    if not dist.is_initialized():
        # Long timeout: in fold-parallel mode ranks wait at the final barrier for the slowest fold.
        dist.init_process_group("nccl" if use_cuda else "gloo", timeout=datetime.timedelta(hours=12))
    return Dist(rank, world, local, parallel), device_name


def shutdown(d: Dist) -> None:
    if d.active and dist.is_initialized():
        dist.destroy_process_group()
