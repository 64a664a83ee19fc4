"""Published checkpoints fetched over HTTP from a local server on 127.0.0.1: verified, refused, or trained instead."""
from __future__ import annotations

import json
import shutil
import socket
from pathlib import Path

import pytest
import torch

import planting_core as pc
from planting_core import book as pb
from conftest import serve
from planting_core.book.fetch import MANIFEST

CFG = pc.TrainConfig(epochs=1, lr=0.02, batch_size=32, progress=False)


@pytest.fixture
def published(tmp_path: Path, data: pc.Data) -> Path:
    """A run folder with a trained teacher and initial network and its manifest, as a publisher leaves it."""
    root = tmp_path / "published"
    pb.load_or_train(root / "teacher.pt", [8] * 5, data, CFG, desc="teacher")
    pb.load_or_train(root / "initial-seed0.pt", [4] * 5, data, CFG, desc="initial")
    (root / "planting" / "seed0").mkdir(parents=True)
    (root / "planting" / "seed0" / "history.csv").write_text("round,params\n0,1\n")
    shutil.copy(root / "initial-seed0.pt", root / "planting" / "seed0" / "planted.pt")  # a finished run
    (root / "planting" / "seed1").mkdir()
    (root / "planting" / "seed1" / "history.csv").write_text("round,params\n0,1\n")  # still running: not published
    (root / "teacher.state.pt").write_bytes(b"a running job's resume state: never published")
    pb.write_manifest(root, {"subset": 256, "seeds": [0], "device": "cpu"})
    return root


@pytest.fixture
def server(tmp_path: Path):
    """An HTTP server on 127.0.0.1 serving tmp_path; yields its base address."""
    with serve(tmp_path) as url:
        yield url


def test_manifest_lists_checkpoints_and_histories_with_their_sha256(published: Path):
    manifest = json.loads((published / MANIFEST).read_text())
    assert sorted(manifest["files"]) == ["initial-seed0.pt", "planting/seed0/history.csv", "planting/seed0/planted.pt",
                                         "teacher.pt"]
    assert manifest["files"]["teacher.pt"] == pb.fetch.sha256((published / "teacher.pt").read_bytes())
    assert manifest["params"] == {"subset": 256, "seeds": [0]}  # the device does not change what is learnt


def test_fetched_checkpoints_are_verified_and_loaded_not_retrained(published: Path, server: str, tmp_path: Path,
                                                                   data: pc.Data, monkeypatch):
    local = tmp_path / "local"
    assert pb.fetch_checkpoints(local, f"{server}/published", {"subset": 256}, progress=False) == 4
    assert (local / "teacher.pt").read_bytes() == (published / "teacher.pt").read_bytes()
    monkeypatch.setattr(pb.experiments, "fit", lambda *a, **k: pytest.fail("a fetched network was retrained"))
    teacher = pb.load_or_train(local / "teacher.pt", [8] * 5, data, CFG, desc="teacher")
    assert pc.checkpoint.fingerprint(teacher) == pc.checkpoint.fingerprint(pc.load_checkpoint(published / "teacher.pt"))
    # a second call fetches nothing: everything is there
    assert pb.fetch_checkpoints(local, f"{server}/published", progress=False) == 0


def test_a_file_that_does_not_match_its_sha256_is_not_kept(published: Path, server: str, tmp_path: Path, capsys):
    (published / "teacher.pt").write_bytes((published / "teacher.pt").read_bytes()[:-10] + b"0123456789")
    local = tmp_path / "local"
    assert pb.fetch_checkpoints(local, f"{server}/published", progress=False) == 3
    assert not (local / "teacher.pt").exists()
    assert "teacher.pt" in capsys.readouterr().out
    assert not list(local.rglob("*.tmp"))


def test_offline_falls_back_to_training(tmp_path: Path, capsys):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    assert pb.fetch_checkpoints(tmp_path / "local", f"http://127.0.0.1:{port}/run", progress=False) == 0
    out = capsys.readouterr().out
    assert "trained here" in out and len(out.strip().splitlines()) == 1
    assert not (tmp_path / "local").exists() or not any((tmp_path / "local").iterdir())


def test_a_missing_file_on_the_server_is_trained_instead(published: Path, server: str, tmp_path: Path, capsys):
    (published / "initial-seed0.pt").unlink()
    assert pb.fetch_checkpoints(tmp_path / "local", f"{server}/published", progress=False) == 3
    assert "initial-seed0.pt" in capsys.readouterr().out


def test_checkpoints_made_with_other_parameters_are_refused_before_downloading(published: Path, server: str,
                                                                               tmp_path: Path):
    with pytest.raises(pc.PlantingError, match=r"made with subset=256 \(here: subset=5000\)"):
        pb.fetch_checkpoints(tmp_path / "local", f"{server}/published", {"subset": 5000, "device": "cuda"})
    assert not (tmp_path / "local").exists()


def test_a_manifest_naming_files_outside_the_folder_is_refused(published: Path, server: str, tmp_path: Path):
    manifest = json.loads((published / MANIFEST).read_text())
    manifest["files"] = {"../escape.pt": "0" * 64}
    (published / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(pc.PlantingError, match="outside the run folder"):
        pb.fetch_checkpoints(tmp_path / "local", f"{server}/published", progress=False)


def test_checkpoint_url_parameter_is_checked():
    assert pb.check_params({"checkpoint_url": "https://example.org/run"})
    with pytest.raises(pc.PlantingError, match="checkpoint_url"):
        pb.check_params({"checkpoint_url": "ftp://example.org/run"})


def test_book_runs_publish_a_manifest_that_matches_their_files():
    from tools.book import BOOK_RUNS
    root = Path(__file__).resolve().parents[1] / "results"
    for run in (root / name for name in BOOK_RUNS):  # a run folder still growing is not published yet
        manifest = json.loads((run / MANIFEST).read_text())
        assert sorted(manifest["files"]) == pb.fetch.published_files(run), run
        for rel, digest in manifest["files"].items():
            assert pb.fetch.sha256((run / rel).read_bytes()) == digest, f"{run.name}/{rel} changed: rerun tools.book"


def test_a_manifest_address_that_answers_404_is_an_error_not_hours_of_training(server: str, tmp_path: Path):
    with pytest.raises(pc.PlantingError, match=r"answered HTTP 404 .*checkpoint_url must be a published run folder"):
        pb.fetch_checkpoints(tmp_path / "local", f"{server}/no-such-run", progress=False)
    assert not (tmp_path / "local").exists()


def test_a_published_torch_file_is_not_used(published: Path, server: str, tmp_path: Path, capsys):
    from planting_core.checkpoint import read_checkpoint
    obj = read_checkpoint(published / "teacher.pt")
    torch.save(obj, published / "teacher.pt")  # the same network as a torch (pickle) file
    with pytest.raises(pc.PlantingError, match="teacher.pt is a torch .pickle. file; convert"):
        pb.write_manifest(published, {"subset": 256})  # this version does not publish it
    manifest = json.loads((published / MANIFEST).read_text())  # as an older version published it
    manifest["files"]["teacher.pt"] = pb.fetch.sha256((published / "teacher.pt").read_bytes())
    manifest["sizes"]["teacher.pt"] = (published / "teacher.pt").stat().st_size
    (published / MANIFEST).write_text(json.dumps(manifest))
    local = tmp_path / "local"
    assert pb.fetch_checkpoints(local, f"{server}/published", progress=False) == 3
    assert not (local / "teacher.pt").exists() and "is a torch (pickle) file" in capsys.readouterr().out
