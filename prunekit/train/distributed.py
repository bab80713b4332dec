"""Data-parallel fine-tuning under ``torchrun``: each rank trains on its share of the batches.

Launch a script that calls ``prunekit.finetune_`` (or ``prunekit.distill_``) with::

    torchrun --standalone --nproc_per_node 2 train.py

Every rank passes the same model and the same, full ``data``; the loop gives rank ``r`` of ``W``
batches ``r, r+W, r+2W, …`` and drops the last ``len(data) % W`` batches, so every rank runs the
same number of steps (a rank that ran out early would leave the others waiting in a collective).
Two ranks on batches of ``b`` then take the same steps as one process on batches of ``2b``.
When ``torchrun``'s variables are set (``WORLD_SIZE`` > 1) and the script did not create a
process group, one is created (gloo on CPU, NCCL for a model on CUDA). Without them, or
with a single rank, nothing changes.

Why not ``DistributedDataParallel``: the loop rebuilds layers smaller while training (structured
pruning on a schedule), trains parameters that are not the model's (a distiller's projections),
reads gradients for pruning scores and zeroes masked ones between backward and the step, and
must hand back the user's own module. A wrapper would have to be torn down and rebuilt around
each rebuild, and its gradient hooks fire before the loop could see the local gradients. So
after each backward the gradients of every parameter the optimizer holds are averaged across
ranks in one all-reduce per dtype (no overlap with the backward pass: the price for models that
fit one machine's CPUs or GPUs). With identical gradients every rank takes the identical step,
computes identical pruning scores and masks, and the weights stay bit-identical across ranks;
floating-point buffers (BatchNorm statistics) are averaged at the end of each epoch. At the
start, rank 0's weights are copied to the other ranks (as ``DistributedDataParallel`` does), so
a model initialised differently per rank still trains as one.

Losses in the report are averaged over ranks; evaluation runs on every rank over the whole
``eval_data`` (the models are identical, so every rank returns the same report); progress bars
and log lines come from rank 0 only.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Iterator, Sized
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader
from torch.utils.data.distributed import DistributedSampler

from prunekit.errors import PrunekitError

__all__ = ["DataParallel", "data_parallel"]

log = logging.getLogger(__name__)


class DataParallel:
    """The loop's view of the ranks: ``world`` processes, this one being ``rank``. With
    ``world == 1`` every method leaves its arguments as they are."""

    def __init__(self, rank: int = 0, world: int = 1) -> None:
        self.rank, self.world = rank, world

    @property
    def is_main(self) -> bool:
        """Whether this rank logs and shows progress (rank 0)."""
        return self.rank == 0

    def shard(self, data: Any) -> Any:
        """This rank's batches of ``data`` (all of them in a single process)."""
        if self.world == 1:
            return data
        if isinstance(data, DataLoader) and isinstance(data.sampler, DistributedSampler):
            raise PrunekitError(
                "data: a DataLoader with a DistributedSampler is already split between ranks; "
                "pass the full, unsplit batches on every rank (rank r trains on batches r, r+W, …)"
            )
        if len(data) < self.world:
            raise PrunekitError(
                f"data: {len(data)} batches cannot be shared by {self.world} ranks; pass at "
                f"least one batch per rank"
            )
        dropped = len(data) % self.world
        if dropped and self.is_main:
            log.info(
                "data-parallel: %d batches over %d ranks; the last %d of each epoch are skipped "
                "so that every rank takes the same number of steps",
                len(data),
                self.world,
                dropped,
            )
        return _Shard(data, self.rank, self.world)

    def broadcast_(self, model: nn.Module, extra: Iterable[nn.Parameter] = ()) -> None:
        """Copy rank 0's parameters and buffers (and ``extra`` parameters) to every rank."""
        if self.world == 1:
            return
        tensors = [*model.parameters(), *model.buffers(), *extra]
        with torch.no_grad():
            for t in _unique(tensors):
                dist.broadcast(t.data, src=0)

    def all_finite(self, loss: torch.Tensor) -> bool:
        """Whether the loss is finite on every rank (all ranks then stop, or go on, together)."""
        finite = bool(torch.isfinite(loss.detach()).all())
        if self.world == 1:
            return finite
        flag = torch.tensor([float(finite)], device=_comm_device())
        dist.all_reduce(flag, op=dist.ReduceOp.MIN)
        return bool(flag.item())

    def average_gradients_(self, optimizer: torch.optim.Optimizer) -> None:
        """Replace each gradient by its mean over the ranks. A parameter without a gradient on
        some ranks counts zero there; without one on every rank it keeps ``grad = None``."""
        if self.world == 1:
            return
        params = _unique([p for group in optimizer.param_groups for p in group["params"]])
        by_kind: dict[tuple[torch.dtype, torch.device], list[nn.Parameter]] = {}
        for p in params:
            by_kind.setdefault((p.dtype, p.device), []).append(p)
        for (dtype, device), group in by_kind.items():
            grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in group]
            present = torch.tensor([p.grad is not None for p in group], dtype=dtype, device=device)
            # One buffer per dtype: the gradients, then a flag per parameter saying whether
            # this rank had its gradient (summed, > 0 means some rank had one).
            flat = torch.cat([*(g.reshape(-1) for g in grads), present])
            dist.all_reduce(flat)
            had = (flat[-len(group) :] > 0).tolist()
            offset = 0
            for p, g, any_rank in zip(group, grads, had, strict=True):
                mean = flat[offset : offset + g.numel()].view_as(g).div_(self.world)
                offset += g.numel()
                p.grad = mean if any_rank else None

    def average_buffers_(self, model: nn.Module) -> None:
        """Average floating-point buffers (running statistics) so every rank holds one model."""
        if self.world == 1:
            return
        with torch.no_grad():
            for b in _unique(list(model.buffers())):
                if b.is_floating_point():
                    dist.all_reduce(b.data)
                    b.data.div_(self.world)

    def slowest(self, seconds: float) -> float:
        """The largest of the ranks' ``seconds`` (a time budget spent on one is spent on all)."""
        if self.world == 1:
            return seconds
        t = torch.tensor([seconds], dtype=torch.float64, device=_comm_device())
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return float(t.item())

    def mean(self, values: dict[str, float]) -> dict[str, float]:
        """Each value averaged over the ranks (per-rank mean losses → the global mean)."""
        if self.world == 1 or not values:
            return values
        t = torch.tensor(list(values.values()), dtype=torch.float64, device=_comm_device())
        dist.all_reduce(t)
        return {k: v / self.world for k, v in zip(values, t.tolist(), strict=True)}


def data_parallel(model: nn.Module) -> DataParallel:
    """The ranks this process trains with: those of the default process group, created from
    ``torchrun``'s environment variables when they are set and none exists yet."""
    if not dist.is_available():
        return DataParallel()
    if not dist.is_initialized():
        world = int(os.environ.get("WORLD_SIZE", "1") or 1)
        if world <= 1:
            return DataParallel()
        missing = [v for v in ("RANK", "MASTER_ADDR", "MASTER_PORT") if v not in os.environ]
        if missing:
            raise PrunekitError(
                f"WORLD_SIZE={world} but {', '.join(missing)} not set: launch with torchrun "
                f"(e.g. torchrun --nproc_per_node {world} script.py), or call "
                f"torch.distributed.init_process_group yourself before training"
            )
        on_cuda = any(p.is_cuda for p in model.parameters())
        backend = "nccl" if on_cuda and dist.is_nccl_available() else "gloo"
        dist.init_process_group(backend=backend)
        if dist.get_rank() == 0:
            log.info("data-parallel: started a %s process group of %d ranks", backend, world)
    return DataParallel(dist.get_rank(), dist.get_world_size())


class _Shard(Sized):
    """Batches ``rank, rank + world, …`` of ``data``, ``len(data) // world`` of them."""

    def __init__(self, data: Any, rank: int, world: int) -> None:
        self.data, self.rank, self.world = data, rank, world

    def __len__(self) -> int:
        return len(self.data) // self.world

    def __iter__(self) -> Iterator[Any]:
        # A DataLoader without its own generator shuffles from the global RNG, which can drift
        # between ranks (batches of different sizes draw different amounts in dropout): all ranks
        # take rank 0's state, so they draw one order and split it.
        state = torch.get_rng_state().to(_comm_device())
        dist.broadcast(state, src=0)
        torch.set_rng_state(state.cpu())
        end = len(self) * self.world
        for i, batch in enumerate(self.data):
            if i >= end:
                break
            if i % self.world == self.rank:
                yield batch


def _comm_device() -> torch.device:
    # NCCL moves only CUDA tensors; gloo takes CPU ones.
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def _unique(tensors: list[torch.Tensor]) -> list[torch.Tensor]:
    # A tied weight appears once per owner; it must be reduced (or broadcast) once.
    seen: set[int] = set()
    out = []
    for t in tensors:
        if id(t) not in seen:
            seen.add(id(t))
            out.append(t)
    return out
