"""Published checkpoints: a run folder's manifest (SHA-256 of every checkpoint and planting history, and the
parameters they were made with), and fetching the missing ones from a web address, each verified on arrival.

A run folder published at URL (e.g. a repository's raw files) holds URL/checkpoints.json; fetch_checkpoints
downloads what the local run folder lacks, so that load-or-train loads instead of training. Offline, or where
a file cannot be fetched or does not match its SHA-256, it says so in one line and that network is trained here.
"""
from __future__ import annotations

import hashlib
import json
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Mapping

from tqdm.auto import tqdm

from ..checkpoint import atomic_write, write_json
from .. import records
from ..errors import PlantingError
from .runfolder import RunFolder

FORMAT = "planting-book-checkpoints/1"
MANIFEST = "checkpoints.json"
# parameters that do not change what is learnt: they need not agree between the publisher and the user (the
# library's such fields come from records.py, their one home; the rest are the book's: where things are, which
# conditions or extra tables a notebook shows)
NOT_LEARNING = records.TRAIN_SPEED | records.TRAIN_NOT_LEARNING | records.GROW_SPEED | {
    "data_root", "device", "out_dir", "checkpoint_url", "quick", "conditions", "verdict_dir", "resampled_dir",
    "tune_lr", "tune_epochs"}
# what every checkpoint of a run depends on (its data split, teacher and initial networks): these must agree
# before anything is fetched; the rest (planting settings, ...) is checked per network by load-or-train
RUN_KEYS = ("dataset", "subset", "val_size", "image_size", "skip_bad_images", "seed", "teacher_width",
            "teacher_epochs", "widths", "epochs", "batch_size", "lr", "augment")
TIMEOUT_S = 20


def sha256(data: bytes) -> str:
    """Hex SHA-256 of some bytes."""
    return hashlib.sha256(data).hexdigest()


def published_files(root: str | Path) -> list[str]:
    """What a run folder publishes, as paths relative to it: every checkpoint (not the resume states of running
    jobs, nor a network listed in a left-out.csv) and the history of every finished planting run (one beside its
    planted.pt)."""
    root = Path(root)
    left_out = RunFolder(root).left_out()
    found = [p for p in root.rglob("*.pt")
             if not p.name.endswith(".state.pt") and p.name != "grow_state.pt" and p not in left_out]
    found += [p for p in root.rglob("history.csv") if (p.parent / "planted.pt").exists()]
    return sorted(p.relative_to(root).as_posix() for p in found)


def write_manifest(root: str | Path, params: Mapping[str, Any]) -> Path:
    """Write root/checkpoints.json: the SHA-256 of every published file and the parameters of the run."""
    root = Path(root)
    files = {rel: sha256((root / rel).read_bytes()) for rel in published_files(root)}
    learning = {k: v for k, v in params.items() if k not in NOT_LEARNING}
    return write_json({"format": FORMAT, "params": learning, "files": files}, root / MANIFEST)


def read_url(url: str) -> bytes:
    """The bytes at `url` (http, https or file), or an OSError/URLError saying why not."""
    if not url.startswith(("http://", "https://", "file://")):
        raise PlantingError(f"checkpoint address {url!r} must start with http://, https:// or file://")
    with urllib.request.urlopen(url, timeout=TIMEOUT_S) as response:
        return response.read()


def _why(err: Exception) -> str:
    reason = getattr(err, "reason", None) or getattr(err, "code", None) or err
    return str(reason).splitlines()[0] if str(reason) else type(err).__name__


def check_params(manifest: Mapping[str, Any], params: Mapping[str, Any], url: str) -> None:
    """Refuse (before any download) checkpoints made with other parameters than `params`, naming what differs."""
    made = manifest.get("params", {})
    differ = {k: made[k] for k in RUN_KEYS if k in made and k in params and params[k] != made[k]}
    if differ:
        wanted = ", ".join(f"{k}={v!r}" for k, v in differ.items())
        now = ", ".join(f"{k}={params[k]!r}" for k in differ)
        raise PlantingError(f"the checkpoints at {url} were made with {wanted} (here: {now}); set those "
                            f"parameters to use them, or set checkpoint_url=None to train everything here")


def fetch_checkpoints(folder: RunFolder | str | Path, url: str, params: Mapping[str, Any] | None = None,
                      progress: bool = True) -> int:
    """Download into `folder` the published checkpoints and histories at `url` that it lacks; return how many.

    Each file is kept only if its SHA-256 matches the manifest. With `params`, checkpoints made with other
    learning parameters are refused before anything is downloaded. Offline: one line, nothing fetched.
    """
    root = folder.root if isinstance(folder, RunFolder) else Path(folder)
    url = url.rstrip("/")
    try:
        manifest = json.loads(read_url(f"{url}/{MANIFEST}"))
    except (OSError, urllib.error.URLError, ValueError) as err:
        print(f"could not read {url}/{MANIFEST} ({_why(err)}): every missing network is trained here instead")
        return 0
    if manifest.get("format") != FORMAT:
        raise PlantingError(f"{url}/{MANIFEST} is not a checkpoint manifest (format {manifest.get('format')!r}, "
                            f"expected {FORMAT!r})")
    if params is not None:
        check_params(manifest, params, url)
    missing = {rel: digest for rel, digest in manifest["files"].items() if not (root / rel).exists()}
    fetched = 0
    for rel, digest in tqdm(missing.items(), desc="fetching checkpoints", unit="file", disable=not progress):
        if ".." in Path(rel).parts or Path(rel).is_absolute():
            raise PlantingError(f"{url}/{MANIFEST} names a file outside the run folder: {rel!r}")
        try:
            data = read_url(f"{url}/{rel}")
        except (OSError, urllib.error.URLError) as err:
            print(f"could not fetch {rel} ({_why(err)}): it will be trained here")
            continue
        if sha256(data) != digest:
            print(f"{rel} from {url} does not match its SHA-256 in the manifest: not used, it will be trained here")
            continue
        atomic_write(root / rel, lambda tmp: tmp.write_bytes(data))
        fetched += 1
    print(f"{fetched} of {len(manifest['files'])} published files fetched from {url} "
          f"({len(manifest['files']) - len(missing)} were here already)")
    return fetched
