"""The book's published checkpoints: safetensors files (no pickle to load), each equal bit for bit to the torch file it
replaced (read from the git history), and a fetched torch file is not used."""
from __future__ import annotations

import io
import subprocess
from pathlib import Path

import pytest
import torch

import planting_core as pc
from planting_core.checkpoint import is_torch_file, read_checkpoint
from tools.to_safetensors import same_checkpoint

ROOT = Path(__file__).resolve().parents[1]


def git(*args: str) -> bytes:
    return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, check=True).stdout


def committed_checkpoints() -> list[str]:
    names = git("ls-files", "results").decode().split("\n")
    return [n for n in names if n.endswith(".pt") and not pc.book.RunFolder.is_resume_state(Path(n))]


@pytest.fixture(scope="module")
def checkpoints() -> list[str]:
    if not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    return committed_checkpoints()


def test_every_committed_checkpoint_is_safetensors_and_loads(checkpoints):
    assert len(checkpoints) > 200
    torch_files = [n for n in checkpoints if is_torch_file(ROOT / n)]
    assert not torch_files, f"torch (pickle) checkpoints: {torch_files[:5]}: run python -m tools.to_safetensors results"
    for name in checkpoints:
        obj = read_checkpoint(ROOT / name)
        assert obj["format"] == pc.checkpoint.FORMAT and obj["state"], name


def test_each_converted_checkpoint_equals_the_torch_file_it_replaced(checkpoints):
    for name in checkpoints:
        last = git("log", "-1", "--format=%H", "--", name).decode().strip()
        try:
            before = git("show", f"{last}^:{name}")
        except subprocess.CalledProcessError:  # the file was born in that commit: nothing to compare
            continue
        if before[:4] != b"PK\x03\x04":  # its previous version was no torch file
            continue
        old = torch.load(io.BytesIO(before), map_location="cpu", weights_only=True)
        assert same_checkpoint(old, read_checkpoint(ROOT / name)), name
