"""One process or many (`torchrun`): the process group, collectives, and the data order."""

from __future__ import annotations

import os
from datetime import timedelta

import torch
import torch.distributed as dist
from torch.utils.data import Sampler

from ..errors import TfcsegError


class Processes:
    """This process's place in the run: `world`, `rank`, `device`, `is_main`, and the
    collectives the loop needs (no-ops on one process)."""

    def __init__(self, device: str) -> None:
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        want_cuda = device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())
        if want_cuda and not torch.cuda.is_available():
            raise TfcsegError("train: device cuda asked for, but no CUDA GPU is available")
        if want_cuda:
            self.device = torch.device(f"cuda:{local_rank}" if self.world > 1 or device == "cuda" else device)
            torch.cuda.set_device(self.device)
        else:
            self.device = torch.device("cpu")
        self._owns_group = False
        if self.world > 1 and not dist.is_initialized():
            dist.init_process_group("nccl" if want_cuda else "gloo", timeout=timedelta(hours=2))
            self._owns_group = True
        self.distributed = self.world > 1
        if self.distributed:
            self.world, self.rank = dist.get_world_size(), dist.get_rank()
        self.is_main = self.rank == 0

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()

    def any(self, flag: bool) -> bool:
        """True on every rank if `flag` is true on any rank."""
        if not self.distributed:
            return flag
        t = torch.tensor([1.0 if flag else 0.0], device=self.device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return bool(t.item() > 0)

    def sum(self, values: list[float]) -> list[float]:
        if not self.distributed:
            return values
        t = torch.tensor(values, dtype=torch.float64, device=self.device)
        dist.all_reduce(t)
        return t.tolist()

    def gather(self, obj):
        """[obj of rank 0, obj of rank 1, ...] on every rank."""
        if not self.distributed:
            return [obj]
        out = [None] * self.world
        dist.all_gather_object(out, obj)
        return out

    def broadcast_buffers(self, module: torch.nn.Module) -> None:
        """BatchNorm running statistics from rank 0 everywhere (DDP does so at each forward;
        after the last step the ranks' own updates differ)."""
        if self.distributed:
            for b in module.buffers():
                dist.broadcast(b, 0)

    def close(self, sync: bool = False) -> None:
        """Leave the process group if this run created it. `sync`: every process is closing
        after the same clean end, so wait for all of them first: a process that tears its
        connections down while a peer's gloo threads still use them can make that peer abort
        at exit (SIGABRT) after its work is done. Not after an error, where a peer may never
        arrive."""
        if self._owns_group and dist.is_initialized():
            if sync:
                dist.barrier()
            dist.destroy_process_group()
            self._owns_group = False


def auto_workers(world: int) -> int:
    """DataLoader workers per process when not given: what the CPUs allow beside the model."""
    cpus = os.cpu_count() or 1
    return max(0, min(4, cpus // world - 2))


class ResumableShardSampler(Sampler[int]):
    """DistributedSampler's order (a permutation seeded by seed + epoch, the tail dropped so
    every rank gets as many items, rank r taking items r, r + world, ...) that can start at
    a batch inside the epoch, so a resumed run reads the same clips without loading the ones
    it skips. Only whole batches are used."""

    def __init__(self, size: int, batch_size: int, rank: int = 0, world: int = 1, seed: int = 0) -> None:
        self.size, self.batch_size, self.rank, self.world, self.seed = size, batch_size, rank, world, seed
        self.batches_per_epoch = (size // world) // batch_size
        self.epoch = 0
        self.start_batch = 0

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        self.epoch, self.start_batch = epoch, start_batch

    def __iter__(self):
        g = torch.Generator()
        g.manual_seed(self.seed + self.epoch)
        order = torch.randperm(self.size, generator=g).tolist()
        mine = order[: (self.size // self.world) * self.world][self.rank::self.world]
        mine = mine[: self.batches_per_epoch * self.batch_size]
        return iter(mine[self.start_batch * self.batch_size:])

    def __len__(self) -> int:
        return max(0, self.batches_per_epoch - self.start_batch) * self.batch_size


