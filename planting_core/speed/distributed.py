"""Several processes under torchrun (torch.distributed): who this process is, and the few collective steps the
package needs. Without torchrun (or with one process) every function here is the single-process identity.

- Checkpoints, histories and tables are written by rank 0 only (checkpoint.atomic_write asks `is_main`);
  the others wait at `barrier` before reading what rank 0 wrote.
- Planting candidates are shared out by `my_share` and their results collected by `gather`.
- Teachers and students train data-parallel (train.fit with DistributedDataParallel).
- Every process is started with the same arguments (`check_same`), and no process waits for ever: a collective
  step that does not complete within PLANTING_COLLECTIVE_TIMEOUT_S seconds (default 1800) ends every process
  with one line naming the processes that stopped answering (each sends a heartbeat through the process
  group's store every HEARTBEAT_S seconds; a stopped or killed process's heartbeat goes stale). That line is
  what gloo (CPUs) gives; under NCCL, torch's watchdog may abort the process at the deadline instead (then its
  own message, naming the collective, is the last line).
"""
from __future__ import annotations

import os
import threading
import time
from datetime import timedelta
from typing import Any, Callable, Iterable, Iterator, Sequence, TypeVar

import torch
import torch.distributed as dist

from ..errors import PlantingError

T = TypeVar("T")
HEARTBEAT_S = 2.0
abandoned = False  # set when a collective step ran past its deadline: the process must exit without clean-up


def collective_timeout_s() -> float:
    """Seconds a collective step may wait for the other processes: $PLANTING_COLLECTIVE_TIMEOUT_S, else 1800."""
    text = os.environ.get("PLANTING_COLLECTIVE_TIMEOUT_S", "1800")
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value > 0:
        raise PlantingError(f"PLANTING_COLLECTIVE_TIMEOUT_S must be a number of seconds > 0, got {text!r}")
    return value


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
    dist.init_process_group("nccl" if cuda else "gloo", timeout=timedelta(seconds=collective_timeout_s()))
    threading.Thread(target=_heartbeat, daemon=True, name="planting-heartbeat").start()
    return world_size()


def _store():
    """The process group's key-value store (torch keeps it private; None where it has moved)."""
    get = getattr(dist.distributed_c10d, "_get_default_store", None)
    return get() if get is not None else None


def _heartbeat() -> None:
    """Write this process's clock into the store every HEARTBEAT_S seconds, until the process group ends."""
    store, key = _store(), f"planting/heartbeat/{rank()}"
    while store is not None and dist.is_initialized():
        try:
            store.set(key, str(time.time()))
        except Exception:  # the store went away with rank 0: nothing to tell any more
            return
        time.sleep(HEARTBEAT_S)


def silent_ranks() -> list[int]:
    """The processes whose heartbeat is older than a few beats (stopped, killed or hung)."""
    store, now, silent = _store(), time.time(), []
    for r in range(world_size()):
        key = f"planting/heartbeat/{r}"
        try:
            beat = float(store.get(key)) if store is not None and store.check([key]) else 0.0
        except Exception:
            beat = 0.0
        if now - beat > 5 * HEARTBEAT_S:
            silent.append(r)
    return silent


def is_timeout(err: BaseException) -> bool:
    """Whether `err` is a collective step that ran past its deadline."""
    return active() and isinstance(err, RuntimeError) and any(
        w in str(err).lower() for w in ("timed out", "timeout", "deadline"))


def timeout_error() -> PlantingError:
    """The one line every process ends with when a collective step ran past its deadline (the process must then
    leave with os._exit: the process group cannot be shut down cleanly with a step still pending)."""
    global abandoned
    abandoned = True
    silent = [r for r in silent_ranks() if r != rank()]
    who = (f"rank(s) {', '.join(map(str, silent))} stopped answering (no heartbeat)" if silent else
           "every rank is alive, so one is still working")
    return PlantingError(f"rank {rank()} waited {collective_timeout_s():g} s for the other processes at a collective "
                         f"step: {who}; restart the job (it resumes), or set PLANTING_COLLECTIVE_TIMEOUT_S higher if "
                         f"a step legitimately takes longer")


def check_same(what: str, settings: dict[str, Any]) -> None:
    """Refuse to go on if any process was started with other `settings` than rank 0: every process raises,
    naming the rank and the settings that differ."""
    if not active():
        return
    parts: list[dict] = [{}] * world_size()
    dist.all_gather_object(parts, settings)  # every process's settings, rank order
    for r, part in enumerate(parts):
        differ = sorted(k for k in set(part) | set(parts[0]) if part.get(k) != parts[0].get(k))
        if differ:
            shown = ", ".join(f"{k}={part.get(k)!r} on rank {r} but {parts[0].get(k)!r} on rank 0" for k in differ)
            raise PlantingError(f"the processes were started with different {what} ({shown}); start every rank "
                                f"with the same arguments")


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
