import pickle

import pytest
import torch

import planting_core as pc


def test_round_trip_rebuilds_the_network(tmp_path):
    torch.manual_seed(0)
    net = pc.plant(pc.PlainCNN([4, 5, 6, 7, 8], layout="stl", image_size=96, num_classes=3), 4, 2, init="random")
    path = pc.save_checkpoint(net, tmp_path / "net.pt", seed=3, note="hi", history=[{"epoch": 1, "loss": 0.5}])
    back = pc.load_checkpoint(path)
    assert back.arch() == pc.merge(net).arch() and back.widths == [4, 5, 6, 7, 10]
    x = torch.randn(2, 3, 96, 96)
    assert torch.allclose(back(x), net(x), rtol=1e-5, atol=1e-6)
    assert back.meta == {"seed": 3, "note": "hi", "history": [{"epoch": 1, "loss": 0.5}]}
    assert not list(tmp_path.glob("*.tmp"))  # atomic: no temporary file left


def test_damaged_file_names_the_file(tmp_path):
    path = pc.save_checkpoint(pc.PlainCNN([4] * 5), tmp_path / "net.pt")
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(pc.CheckpointError, match="net.pt: damaged"):
        pc.load_checkpoint(path)


def test_foreign_files_are_refused(tmp_path):
    other = tmp_path / "other.pt"
    torch.save({"weights": torch.zeros(3)}, other)
    with pytest.raises(pc.CheckpointError, match="other.pt: not a planting-book network checkpoint"):
        pc.load_checkpoint(other)
    code = tmp_path / "code.pt"
    code.write_bytes(pickle.dumps(pc.TrainConfig()))  # a pickle that would build an object
    with pytest.raises(pc.CheckpointError, match="code.pt"):
        pc.load_checkpoint(code)
    with pytest.raises(pc.CheckpointError, match="missing.pt: no such checkpoint file"):
        pc.load_checkpoint(tmp_path / "missing.pt")


def rewrite(obj: dict, path) -> None:
    """Write an edited checkpoint (as read_checkpoint gives it) back as a safetensors checkpoint."""
    from planting_core.checkpoint import checkpoint_bytes
    path.write_bytes(checkpoint_bytes({k: v for k, v in obj.items() if k not in ("format", "meta")}, obj["meta"]))


def test_inconsistent_checkpoint(tmp_path):
    path = pc.save_checkpoint(pc.PlainCNN([4] * 5), tmp_path / "net.pt")
    obj = pc.checkpoint.read_checkpoint(path)
    obj["arch"]["widths"] = [3] * 5  # fewer weights than it holds: built, then refused
    rewrite(obj, path)
    with pytest.raises(pc.CheckpointError, match="do not fit its architecture"):
        pc.load_checkpoint(path)


def test_metadata_must_be_plain(tmp_path):
    with pytest.raises(pc.PlantingError, match="metadata 'cfg' must be plain values"):
        pc.save_checkpoint(pc.PlainCNN([4] * 5), tmp_path / "n.pt", cfg=pc.TrainConfig())


def test_temp_files_of_killed_writers_are_cleaned_up(tmp_path):
    import subprocess
    import sys
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()  # its pid is now free: a writer killed mid-save
    stale = tmp_path / f".net.pt.{dead.pid}.tmp"
    stale.write_bytes(b"half a checkpoint")
    other = tmp_path / f".other.pt.{dead.pid}.tmp"  # another file's temp is not ours to delete
    other.write_bytes(b"x")
    pc.save_checkpoint(pc.PlainCNN([4] * 5), tmp_path / "net.pt")
    assert not stale.exists() and other.exists()


def test_failed_save_leaves_no_temp_file(tmp_path):
    with pytest.raises(Exception):
        pc.checkpoint.atomic_save({"f": lambda x: x}, tmp_path / "bad.pt")  # a lambda cannot be pickled
    assert not list(tmp_path.glob("*.tmp")) and not (tmp_path / "bad.pt").exists()


def test_numpy_and_torch_scalars_in_metadata_are_saved_as_plain_numbers(tmp_path):
    import numpy as np
    import pandas as pd
    mean = pd.Series([0.5, 0.7]).mean()  # a numpy float64, as pandas gives
    pc.save_checkpoint(pc.PlainCNN([4] * 5), tmp_path / "n.pt", acc=mean, n=np.int64(3), t=torch.tensor(1.5),
                       pair=(np.float32(1.0), 2))
    meta = pc.load_checkpoint(tmp_path / "n.pt").meta  # loads with weights_only=True
    assert meta == {"acc": 0.6, "n": 3, "t": 1.5, "pair": [1.0, 2]} and type(meta["acc"]) is float


@pytest.mark.parametrize("change", [{"hidden": 12_000_000}, {"widths": [8, 8, 8, 8, 5_000_000]}, {"image_size": 4096}])
def test_a_checkpoint_declaring_a_huge_architecture_is_refused_before_building_it(tmp_path, monkeypatch, change):
    path = tmp_path / "small.pt"
    pc.save_checkpoint(pc.PlainCNN([8] * 5, in_channels=1, image_size=28), path)
    obj = pc.checkpoint.read_checkpoint(path)
    obj["arch"].update(change)
    rewrite(obj, path)  # a small file whose architecture claims a huge network
    built = []
    monkeypatch.setattr(pc.checkpoint, "build_network", lambda arch: built.append(arch))
    with pytest.raises(pc.CheckpointError, match=r"small\.pt: its architecture declares .* refused before building"):
        pc.load_checkpoint(path)
    assert not built  # nothing was allocated for it


def test_a_checkpoint_whose_arch_is_not_a_mapping_is_one_line(tmp_path):
    path = tmp_path / "odd.pt"
    pc.save_checkpoint(pc.PlainCNN([4] * 5), path)
    obj = pc.checkpoint.read_checkpoint(path)
    obj["arch"] = [1, 2, 3]
    rewrite(obj, path)
    with pytest.raises(pc.CheckpointError, match=r"odd\.pt: its arch and state must be mappings, got list"):
        pc.load_checkpoint(path)
