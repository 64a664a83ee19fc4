"""Published checkpoints: a run folder's manifest (SHA-256 of every checkpoint and planting history, and the
parameters they were made with), and fetching the missing ones from a web address, each verified on arrival.

A run folder published at URL (e.g. a repository's raw files) holds URL/checkpoints.json; fetch_checkpoints
downloads what the local run folder lacks, so that load-or-train loads instead of training. Offline, or where
a file cannot be fetched or does not match its SHA-256, it says so in one line and that network is trained here;
a server that answers the manifest's address with an HTTP error (404: a wrong address) is an error, since
training everything instead would silently cost hours.

Every download is bounded: streamed to a temporary file beside its target (renamed only once its SHA-256 matches),
at most the size the manifest gives (or MAX_FILE_BYTES where it gives none; the manifest itself MAX_MANIFEST_BYTES),
within DEADLINE_S in all, whatever the server sends. It uses urllib from the standard library rather than
requests: a published run is a handful of static files, and `read1` gives the chunk-by-chunk reads the limits need.
"""
from __future__ import annotations

import hashlib
import http.client
import json
import os
import re
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any, Callable, Mapping

from tqdm.auto import tqdm

from ..checkpoint import is_torch_file, read_checkpoint, write_json
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
TIMEOUT_S = 20  # seconds one read may wait for the server
DEADLINE_S = 900  # seconds one file may take in all: a server that sends a byte at a time is stopped here
MAX_MANIFEST_BYTES = 16 * 2**20
MAX_FILE_BYTES = 2**30  # for a file whose size the manifest does not give (manifests written before it did)
CHUNK_BYTES = 2**16
SHA256_HEX = re.compile(r"[0-9a-f]{64}")


class DownloadStopped(Exception):
    """A download ended before its end: over its size limit or past its deadline (the message says which)."""


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
             if not RunFolder.is_resume_state(p) and p not in left_out]
    found += [p for p in root.rglob("history.csv") if (p.parent / "planted.pt").exists()]
    return sorted(p.relative_to(root).as_posix() for p in found)


def write_manifest(root: str | Path, params: Mapping[str, Any]) -> Path:
    """Write root/checkpoints.json: the SHA-256 of every published file and the parameters of the run. Every
    checkpoint is read first: a damaged one (e.g. truncated) is refused, naming it, rather than published."""
    root = Path(root)
    rels = published_files(root)
    for rel in rels:
        if rel.endswith(".pt"):
            if is_torch_file(root / rel):  # fetch_checkpoints would refuse it: publishing it would cost its users hours
                raise PlantingError(f"{root / rel} is a torch (pickle) file; convert the run folder first: "
                                    f"python -m tools.to_safetensors {root}")
            read_checkpoint(root / rel)  # CheckpointError naming the file
    files = {rel: sha256((root / rel).read_bytes()) for rel in rels}
    sizes = {rel: (root / rel).stat().st_size for rel in rels}
    learning = {k: v for k, v in params.items() if k not in NOT_LEARNING}
    return write_json({"format": FORMAT, "params": learning, "files": files, "sizes": sizes}, root / MANIFEST)


def stream_url(url: str, sink: Callable[[bytes], object], max_bytes: int) -> None:
    """Pass the body at `url` (http, https or file) to `sink` chunk by chunk; DownloadStopped past `max_bytes` or
    DEADLINE_S, an OSError/URLError where it cannot be read."""
    if not url.startswith(("http://", "https://", "file://")):
        raise PlantingError(f"checkpoint address {url!r} must start with http://, https:// or file://")
    start, received = time.monotonic(), 0
    with urllib.request.urlopen(url, timeout=TIMEOUT_S) as response:
        declared = response.headers.get("Content-Length", "")
        if declared.isdigit() and int(declared) > max_bytes:
            raise DownloadStopped(f"the server announces {int(declared):,} bytes, more than the {max_bytes:,} "
                                  f"expected")
        while chunk := response.read1(CHUNK_BYTES):  # returns what one read gives: a slow server cannot stall it
            received += len(chunk)
            if received > max_bytes:
                raise DownloadStopped(f"more than the {max_bytes:,} bytes expected: stopped there")
            if time.monotonic() - start > DEADLINE_S:
                raise DownloadStopped(f"not complete after {DEADLINE_S} s ({received:,} bytes): stopped")
            sink(chunk)


def read_url(url: str, max_bytes: int | None = None) -> bytes:
    """The bytes at `url`, at most `max_bytes` (default MAX_MANIFEST_BYTES) of them (see stream_url)."""
    body = bytearray()
    stream_url(url, body.extend, MAX_MANIFEST_BYTES if max_bytes is None else max_bytes)
    return bytes(body)


def download(url: str, path: Path, digest: str, max_bytes: int) -> bool:
    """Stream `url` into `path` (through a temporary file beside it); keep it only if its SHA-256 is `digest`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp, h = path.with_name(f".{path.name}.{os.getpid()}.download"), hashlib.sha256()
    try:
        with open(tmp, "wb") as out:
            stream_url(url, lambda chunk: (h.update(chunk), out.write(chunk)), max_bytes)
        if h.hexdigest() != digest:
            return False
        os.replace(tmp, path)
        return True
    finally:
        tmp.unlink(missing_ok=True)  # left only by a failed or refused download


def check_manifest(manifest: Any, where: str) -> None:
    """Refuse, in one line, a manifest that is not {"format", "params", "files": {relative path: SHA-256}, "sizes"}
    or that names a file outside the run folder."""
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        got = manifest.get("format") if isinstance(manifest, dict) else type(manifest).__name__
        raise PlantingError(f"{where} is not a checkpoint manifest (format {got!r}, expected a JSON object with "
                            f"format {FORMAT!r})")
    files, sizes, params = manifest.get("files"), manifest.get("sizes", {}), manifest.get("params", {})
    if not isinstance(params, dict):
        raise PlantingError(f"{where}: 'params' must map each parameter's name to its value")
    if not isinstance(files, dict) or not all(isinstance(d, str) and SHA256_HEX.fullmatch(d) for d in files.values()):
        raise PlantingError(f"{where}: 'files' must map each file's path to its SHA-256 (64 hex digits), got "
                            f"{type(files).__name__}")
    if not isinstance(sizes, dict) or not all(type(n) is int and n >= 0 for n in sizes.values()):
        raise PlantingError(f"{where}: 'sizes' must map each file's path to its size in bytes")
    for rel in files:
        if not rel or any(c in rel for c in "\0\n\r\\") or ".." in Path(rel).parts or Path(rel).is_absolute():
            raise PlantingError(f"{where} names a file outside the run folder or with an unusable name: {rel!r}")


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
    except urllib.error.HTTPError as err:  # the server answered: the address is wrong, not the network
        raise PlantingError(f"{url}/{MANIFEST} answered HTTP {err.code} ({err.reason}): checkpoint_url must be a "
                            f"published run folder's address (the folder that holds {MANIFEST}); fix it, or set "
                            f"checkpoint_url=None to train everything here") from None
    except (OSError, ValueError, http.client.HTTPException, DownloadStopped) as err:
        print(f"could not read {url}/{MANIFEST} ({_why(err)}): every missing network is trained here instead")
        return 0
    check_manifest(manifest, f"{url}/{MANIFEST}")
    if params is not None:
        check_params(manifest, params, url)
    missing = {rel: digest for rel, digest in manifest["files"].items() if not (root / rel).exists()}
    fetched = 0
    for rel, digest in tqdm(missing.items(), desc="fetching checkpoints", unit="file", disable=not progress):
        try:
            ok = download(f"{url}/{urllib.parse.quote(rel)}", root / rel, digest,
                          manifest.get("sizes", {}).get(rel, MAX_FILE_BYTES))
        except (OSError, ValueError, http.client.HTTPException, DownloadStopped) as err:  # URLError is an OSError
            print(f"could not fetch {rel} ({_why(err)}): it will be trained here")
            continue
        if not ok:
            print(f"{rel} from {url} does not match its SHA-256 in the manifest: not used, it will be trained here")
            continue
        if rel.endswith(".pt") and is_torch_file(root / rel):  # published weights load without pickle, or not at all
            (root / rel).unlink()
            print(f"{rel} from {url} is a torch (pickle) file, not a safetensors checkpoint: not used, it will be "
                  f"trained here (its publisher can convert it: python -m tools.to_safetensors)")
            continue
        fetched += 1
    print(f"{fetched} of {len(manifest['files'])} published files fetched from {url} "
          f"({len(manifest['files']) - len(missing)} were here already)")
    return fetched
