"""Convert network checkpoints written as torch files (pickle) into safetensors checkpoints, bit-exactly.

    python -m tools.to_safetensors results            # every *.pt under results/ (resume states are left alone)

Each file is read with weights_only=True, written as planting_core.checkpoint writes checkpoints now (the weights
as tensors, the network's shape and metadata as JSON in the header), read back and compared (every tensor equal
in dtype, shape and bits; the metadata equal as JSON) before it replaces the original; then every run folder's
manifest (checkpoints.json) is rewritten with the new SHA-256s and sizes.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from planting_core.book import fetch
from planting_core.book.runfolder import RunFolder
from planting_core.checkpoint import FORMAT, atomic_write, checkpoint_bytes, is_torch_file, read_checkpoint, safe_load
from planting_core.errors import PlantingError, cli


def same_checkpoint(a: dict, b: dict) -> bool:
    """Whether two checkpoints (as read_checkpoint gives them) hold the same tensors bit for bit and the same
    shape and metadata."""
    plain = [{k: v for k, v in x.items() if k != "state"} for x in (a, b)]
    if json.dumps(plain[0], sort_keys=True) != json.dumps(plain[1], sort_keys=True):
        return False
    sa, sb = a["state"], b["state"]
    return sa.keys() == sb.keys() and all(
        sa[k].dtype == sb[k].dtype and sa[k].shape == sb[k].shape
        and torch.equal(sa[k].reshape(-1).view(torch.uint8), sb[k].reshape(-1).view(torch.uint8)) for k in sa)


def convert(path: Path) -> bool:
    """Rewrite one torch-file checkpoint as safetensors, if it is one; True if it was converted."""
    if not is_torch_file(path):
        return False
    old = safe_load(path)
    if not isinstance(old, dict) or old.get("format") != FORMAT or not isinstance(old.get("state"), dict):
        raise PlantingError(f"{path}: a torch file but not a network checkpoint (format {FORMAT!r}); left as it was")
    record = {k: v for k, v in old.items() if k not in ("format", "meta")}
    data = checkpoint_bytes(record, old.get("meta", {}))
    tmp = path.with_name(f".{path.name}.convert.tmp")
    try:
        tmp.write_bytes(data)
        if not same_checkpoint(old, read_checkpoint(tmp)):
            raise PlantingError(f"{path}: the safetensors copy differs from the original; left as it was")
    finally:
        tmp.unlink(missing_ok=True)
    atomic_write(path, lambda t: t.write_bytes(data))
    return True


def main(argv: list[str] | None = None) -> int:
    """Convert every checkpoint under the folders given, then rewrite their manifests; 2 on a one-line error."""
    ap = argparse.ArgumentParser(prog="python -m tools.to_safetensors", description=__doc__.splitlines()[0])
    ap.add_argument("roots", nargs="+", type=Path, help="folders whose checkpoints to convert")

    def job() -> None:
        a = ap.parse_args(argv)
        for root in a.roots:
            files = [p for p in sorted(root.rglob("*.pt")) if not RunFolder.is_resume_state(p)]
            done = sum(convert(p) for p in files)
            print(f"{root}: {done} of {len(files)} checkpoints converted to safetensors")
            for manifest in sorted(root.rglob(fetch.MANIFEST)):
                params = json.loads(manifest.read_text())["params"]
                fetch.write_manifest(manifest.parent, params)
                print(f"rewrote {manifest}")
    return cli(job)


if __name__ == "__main__":
    sys.exit(main())
