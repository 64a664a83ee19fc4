"""Checkpoints and result files, written atomically; a network's checkpoint carries its shape and loads without pickle.

A network checkpoint (save_checkpoint) is a safetensors file: the weights as tensors, and in its header the format,
the network's shape and the metadata as JSON, so loading a published file runs no pickle on any torch version (the
run folders keep the name `*.pt` for their layout; read one with load_checkpoint, or safetensors.torch.load_file for
the bare weights, not torch.load). Checkpoints written before 2026-12-02 are torch files and still load, with
weights_only=True, as do the resume states (`*.state.pt`, grow_state.pt), which stay torch files.
"""
from __future__ import annotations

import json
import os
import pickle
import shutil
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import torch

from .speed import distributed
from .errors import CheckpointError, PlantingError
from .hashing import tensor_digest
from .models import build_network, param_count
from .planting import is_planted, merge
from .site_planting import module_sizes, resized

if TYPE_CHECKING:  # pandas is imported by whoever builds a table, not by the library
    import pandas as pd

FORMAT = "planting-book/1"


def fingerprint(model: torch.nn.Module) -> str:
    """Digest of a network's weights (a planted one as merged): it tells whether two networks are the same."""
    return tensor_digest((merge(model) if is_planted(model) else model).state_dict())


def atomic_write(path: str | Path, write: Callable[[Path], object]) -> Path:
    """Call `write(tmp)` on a temporary file beside `path`, then rename: a crash never leaves a half-written file.

    A failed write (a full disk, a read-only folder) is a PlantingError naming the file; no temporary file is left.
    Under torchrun only rank 0 writes (the others return at once).
    """
    path = Path(path)
    if not distributed.is_main():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_temps(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    except (OSError, RuntimeError) as err:  # torch reports a failed write (e.g. a full disk) as a RuntimeError
        free = shutil.disk_usage(path.parent).free
        reason = getattr(err, "strerror", None) or str(err).splitlines()[0]
        raise CheckpointError(f"cannot write {path} ({reason}; {free / 2**20:.1f} MiB free there): free space "
                              f"or choose another folder, then rerun (finished work is kept)") from None
    finally:
        tmp.unlink(missing_ok=True)  # only left if writing failed
    return path


def atomic_save(obj: Any, path: str | Path) -> Path:
    """torch.save `obj` to `path` atomically (see atomic_write)."""
    return atomic_write(path, lambda tmp: torch.save(obj, tmp))


def write_csv(table: pd.DataFrame, path: str | Path) -> Path:
    """Write a table (no index column) to `path` atomically (see atomic_write)."""
    return atomic_write(path, lambda tmp: table.to_csv(tmp, index=False))


def write_json(obj: Any, path: str | Path) -> Path:
    """Write `obj` as indented JSON to `path` atomically (see atomic_write); unknown types are written as text."""
    return atomic_write(path, lambda tmp: tmp.write_text(json.dumps(obj, indent=1, default=str)))


def _remove_stale_temps(path: Path) -> None:
    """Delete temporary files for `path` left by writers that were killed mid-save (their pid is gone)."""
    for tmp in path.parent.glob(f".{path.name}.*.tmp"):
        pid = tmp.name[len(path.name) + 2:-len(".tmp")]
        if pid.isdigit() and not _alive(int(pid)):
            tmp.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def safe_load(path: str | Path, what: str = "checkpoint") -> Any:
    """torch.load with weights_only=True; a missing, damaged or code-carrying file raises CheckpointError."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such {what} file")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise CheckpointError(f"{path}: refused to load: it holds objects other than tensors and plain values "
                              f"(weights_only=True never runs code from a file): {str(err).splitlines()[0]}") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError) as err:
        raise CheckpointError(f"{path}: damaged or not a PyTorch file ({type(err).__name__}: "
                              f"{str(err).splitlines()[0] if str(err) else 'unreadable'})") from None


def plain_value(value: Any, key: str = "") -> Any:
    """`value` as plain Python (numpy and torch scalars become numbers, tuples lists), so that every saved file
    loads with weights_only=True; anything else raises a PlantingError naming the key."""
    if type(value) in (str, int, float, bool, type(None)):  # exactly: numpy's float64 subclasses float
        return value
    if isinstance(value, (list, tuple)):
        return [plain_value(v, key) for v in value]
    if isinstance(value, dict):
        if not all(isinstance(k, str) for k in value):
            raise PlantingError(f"checkpoint metadata {key!r}: dictionary keys must be strings")
        return {k: plain_value(v, f"{key}.{k}") for k, v in value.items()}
    if hasattr(value, "item") and getattr(value, "ndim", None) == 0:  # numpy or torch scalar
        return plain_value(value.item(), key)
    raise PlantingError(f"checkpoint metadata {key!r} must be plain values (str, int, float, bool, None, lists or "
                        f"dicts of them, or numpy/torch scalars), got {type(value).__name__}")


def network_record(net: torch.nn.Module) -> dict:
    """A plain (unplanted) network as plain values and CPU tensors: its shape (a PlainCNN's or registered kind's
    arch(), any other network's module sizes) and its state; network_from_record() rebuilds it."""
    shape = {"arch": net.arch()} if hasattr(net, "arch") else {"sizes": module_sizes(net), "class": type(net).__name__}
    return {**shape, "state": {k: v.detach().cpu() for k, v in net.state_dict().items()}}


def check_declared_size(obj: dict) -> None:
    """Refuse a record whose architecture declares more weights than its state holds (e.g. a small file claiming
    hidden=12,000,000), before anything is allocated; grown networks' sizes are bounded by resized()."""
    if "sizes" in obj:
        return
    arch, state = obj.get("arch"), obj.get("state")
    if not isinstance(arch, dict) or not isinstance(state, dict):
        raise CheckpointError(f"its arch and state must be mappings, got {type(arch).__name__} and "
                              f"{type(state).__name__}")
    held = sum(t.numel() for t in state.values() if isinstance(t, torch.Tensor))
    values = [v for v in arch.values() if isinstance(v, int)] + [
        w for v in arch.values() if isinstance(v, list) for w in v if isinstance(w, int)]
    if any(v > held for v in values):  # no layer can be wider than all the weights there are
        raise CheckpointError(f"its architecture declares a size of {max(values):,}, more than the {held:,} weights "
                              f"it holds: refused before building it")
    if arch.get("kind", "plain") == "plain":
        declared = param_count(**{k: v for k, v in arch.items() if k != "kind"})
        if declared > held:
            raise CheckpointError(f"its architecture declares {declared:,} parameters but it holds {held:,}: "
                                  f"refused before building it")


def is_torch_file(path: Path) -> bool:
    """Whether `path` is a torch.save file (a zip archive) rather than a safetensors one."""
    with open(path, "rb") as f:
        return f.read(4) == b"PK\x03\x04"


def checkpoint_bytes(record: dict, meta: dict) -> bytes:
    """A network_record() and its plain-value metadata as the bytes of a safetensors checkpoint."""
    from safetensors.torch import save
    shape = {k: v for k, v in record.items() if k != "state"}
    header = {"format": FORMAT, "network": json.dumps(shape), "meta": json.dumps(meta)}
    return save({k: v.contiguous() for k, v in record["state"].items()}, metadata=header)


def read_checkpoint(path: Path) -> dict:
    """A checkpoint file as {"format", "arch" or "sizes" and "class", "state", "meta"}: a safetensors one read
    without pickle, an older torch one with weights_only=True; a damaged one raises CheckpointError."""
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    if is_torch_file(path):
        return safe_load(path)
    from safetensors.torch import load
    data = path.read_bytes()  # read whole (no memory map): a file replaced later cannot pull tensors from under us
    try:
        size = int.from_bytes(data[:8], "little")  # the safetensors header: its length, then JSON
        header = json.loads(data[8:8 + size])["__metadata__"] if 8 + size <= len(data) else {}
        state = load(data)
        shape, meta = json.loads(header["network"]), json.loads(header["meta"])
    except Exception as err:  # safetensors' own error, a KeyError or a JSONDecodeError: all mean "not one of ours"
        raise CheckpointError(f"{path}: damaged or not a checkpoint file ({type(err).__name__}: "
                              f"{str(err).splitlines()[0] if str(err) else 'unreadable'})") from None
    if not isinstance(shape, dict):
        raise CheckpointError(f"{path}: its network shape must be a mapping, got {type(shape).__name__}")
    return {"format": header.get("format"), **shape, "state": state, "meta": meta}  # state: tensors in memory


def network_from_record(obj: dict, template: torch.nn.Module | None = None) -> torch.nn.Module:
    """The network network_record() describes (a network other than the book's kinds resized from `template`)."""
    check_declared_size(obj)
    model = build_network(obj["arch"]) if "sizes" not in obj else resized(template, obj["sizes"])
    model.load_state_dict(obj["state"])
    return model


def save_checkpoint(model: torch.nn.Module, path: str | Path, **meta: Any) -> Path:
    """Save a (planted or plain) network with its shape and plain-value metadata, atomically: a PlainCNN's arch, or
    any other network's module sizes (its grown widths; load it with load_checkpoint(path, template=...))."""
    meta = {k: plain_value(v, k) for k, v in meta.items()}
    data = checkpoint_bytes(network_record(merge(model) if is_planted(model) else model), meta)
    return atomic_write(path, lambda tmp: tmp.write_bytes(data))


def load_checkpoint(path: str | Path, device: str | torch.device | None = "cpu",
                    template: torch.nn.Module | Callable[[], torch.nn.Module] | None = None) -> torch.nn.Module:
    """Rebuild the network saved by save_checkpoint; its metadata is in `model.meta`. A network other than the
    book's kinds is rebuilt from `template` (an instance of its class, at any widths, or a function that makes
    one: called only for such a network), resized to the saved ones."""
    obj = read_checkpoint(Path(path))
    if not isinstance(obj, dict) or obj.get("format") != FORMAT:
        found = obj.get("format") if isinstance(obj, dict) else type(obj).__name__
        raise CheckpointError(f"{path}: not a planting-book network checkpoint (expected format {FORMAT!r}, "
                              f"found {found!r})")
    meta = obj.get("meta", {})
    if not isinstance(meta, dict):
        raise CheckpointError(f"{path}: its metadata must be a mapping of names to values, got {type(meta).__name__}")
    if "sizes" in obj and template is None:
        raise CheckpointError(f"{path}: holds a grown {obj.get('class', 'network')}; pass template= an instance of "
                              f"that class (any widths) to load it")
    if "sizes" in obj and not isinstance(template, torch.nn.Module):
        template = template()  # built only now that it is needed
    try:
        model = network_from_record(obj, template)
    except CheckpointError as err:
        raise CheckpointError(f"{path}: {err}") from None
    except (KeyError, TypeError, RuntimeError, PlantingError) as err:
        raise CheckpointError(f"{path}: inconsistent checkpoint, its weights do not fit its architecture "
                              f"({type(err).__name__}: {str(err).splitlines()[0]})") from None
    model.meta = dict(meta)
    return model.to(device) if device is not None else model
