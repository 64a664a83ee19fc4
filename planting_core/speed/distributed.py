"""Several processes under torchrun (torch.distributed): who this process is, and the few collective steps the
package needs. Without torchrun (or with one process) every function here is the single-process identity.

- Checkpoints, histories and tables are written by rank 0 only (checkpoint.atomic_write asks `is_main`);
  the others wait at `barrier` before reading what rank 0 wrote.
- Planting candidates are shared out by `my_share` and their results collected by `gather`.
- Teachers and students train data-parallel (train.fit with DistributedDataParallel).
"""
from __future__ import annotations

import os
from datetime import timedelta
from typing import Any, Callable, Iterable, Iterator, Sequence, TypeVar

import torch
import torch.distributed as dist

from ..errors import PlantingError

T = TypeVar("T")


def active() -> bool:
    """True inside an initialised process group of more than one process."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def world_size() -> int:
    """How many processes share the job (1 without torchrun)."""
    return dist.get_world_size() if active() else 1


def rank() -> int:
    """This process's rank (0 without torchrun)."""
    return dist.get_rank() if active() else 0


def is_main() -> bool:
    """True in the process that writes files (rank 0)."""
    return rank() == 0


def init_from_env(device: str = "auto") -> int:
    """Join the process group torchrun describes in the environment (WORLD_SIZE, RANK, LOCAL_RANK, MASTER_ADDR);
    nccl with one GPU per process where CUDA is used, gloo on CPUs. Returns the world size (1: nothing to join)."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size <= 1 or active():
        return world_size()
    cuda = device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())
    if cuda:
        local = int(os.environ.get("LOCAL_RANK", "0"))
        if local >= torch.cuda.device_count():
            raise PlantingError(f"torchrun started {size} processes per node but this node has "
                                f"{torch.cuda.device_count()} GPU(s); allowed: --nproc-per-node at most that")
        torch.cuda.set_device(local)
    dist.init_process_group("nccl" if cuda else "gloo", timeout=timedelta(minutes=30))
    return world_size()


def barrier() -> None:
    """Wait until every process gets here (e.g. before reading a file rank 0 has just written)."""
    if active():
        dist.barrier()


def my_share(items: Sequence[T]) -> Sequence[T]:
    """This process's part of a list of tasks or a batch (list or tensor): items r, r + N, r + 2N, ... for
    rank r of N."""
    return items[rank()::world_size()]


def gather(mine: dict[str, Any]) -> dict[str, Any]:
    """Every process's results (keyed by task) merged into one dict, the same in every process."""
    if not active():
        return dict(mine)
    parts: list[dict | None] = [None] * world_size()
    dist.all_gather_object(parts, mine)
    return {k: v for part in parts for k, v in (part or {}).items()}


def shared_map(run: Callable[[list[T]], Iterable[tuple[str, Any]]], items: list[T],
               key: Callable[[T], str]) -> Iterator[tuple[str, Any]]:
    """`run(items)` yields (key, result) per item. Alone, as it yields them; under torchrun each process runs its
    share, and every process then yields every item's result, in the order of `items`."""
    if not active():
        yield from run(items)
        return
    results = gather(dict(run(my_share(items))))
    for item in items:
        yield key(item), results[key(item)]


def on_main(step: Callable[[], T]) -> T | None:
    """Run `step` in rank 0 only (it returns None elsewhere). If it fails there, every process raises: rank 0 its
    own error, the others a one-line PlantingError saying what rank 0 hit (they would otherwise wait forever)."""
    if not active():
        return step()
    error, result = None, None
    if is_main():
        try:
            result = step()
        except Exception as err:
            error = err
    box = [None if error is None else (str(error) if isinstance(error, PlantingError)
                                       else f"rank 0 failed: {type(error).__name__}: {error}")]
    dist.broadcast_object_list(box, src=0)
    if error is not None:
        raise error
    if box[0] is not None:
        raise PlantingError(box[0])
    return result


def wrap(model: torch.nn.Module) -> torch.nn.Module:
    """The model wrapped in DistributedDataParallel (gradients averaged over processes), or itself alone."""
    if not active():
        return model
    from torch.nn.parallel import DistributedDataParallel
    dev = next(model.parameters()).device
    return DistributedDataParallel(model, device_ids=[dev.index] if dev.type == "cuda" else None)


def all_sum(value: torch.Tensor) -> torch.Tensor:
    """The sum of a tensor over every process (itself without torchrun)."""
    if active():
        value = value.clone()
        dist.all_reduce(value)
    return value
