"""Hostile-user cases (issue 10), one group per numbered point: no silent wrong result, every option checked before
any training, one writer per run folder, and one-line errors for a broken environment.

    1 ImageFolder layouts and unreadable files      6 one writer per run folder
    2 non-finite validation results                 7 a failed batch notebook keeps the good one
    3 a run pinned to its teacher                   8 concurrent first use of a data root
    4 options checked before any work               9 one-line errors (exit 2) for a broken environment
    5 checkpoint metadata: see test_checkpoint.py::test_numpy_and_torch_scalars_in_metadata_are_saved_as_plain_numbers
"""
from __future__ import annotations

import gzip
import os
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

import planting_core as pc
from planting_core import book as pb
from conftest import small_cfg, tiny_notebook
from planting_core.data import DEBIAN_FASHION_MNIST, IDX_FILES
from planting_core.errors import cli
from planting_core.book.run import main as job_main
from tools.batch import run_batch

ROOT = Path(__file__).resolve().parents[1]
needs_fashion_mnist = pytest.mark.skipif(not DEBIAN_FASHION_MNIST.is_dir(), reason="apt-get install dataset-fashion-mnist")


def save_image(path: Path, seed: int = 0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (12, 12, 3), dtype=np.uint8)).save(path)


def image_tree(root: Path, layout: dict[str, int]) -> Path:
    """Write `count` images into each `root/<folder>` of `layout` ("train/cat": 3, ...)."""
    for folder, count in layout.items():
        for i in range(count):
            save_image(root / folder / f"{i}.png", seed=i)
    return root


def one_line_error(code: int, err: str, *words: str) -> None:
    """A CLI job ended with exit code 2 and one line on stderr that holds every one of `words`."""
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: "), err
    for word in words:
        assert word in lines[0], (word, lines[0])


# ---------------------------------------------------------------- 1: ImageFolder
@pytest.mark.parametrize("folders,match", [
    ({"train/a": 2, "train/b": 2, "val/a": 1, "val/b": 1}, "found train/ but no test/"),
    ({"test/a": 2, "test/b": 2}, "found test/ but no train/"),
    ({"train/a": 3, "train/b": 3, "train/c": 3, "test/a": 1, "test/c": 1}, r"test/ lacks \['b'\] and has extra \[\]"),
    ({"train/a": 3, "train/b": 3, "test/a": 1, "test/b": 1, "test/z": 1}, r"test/ lacks \[\] and has extra \['z'\]"),
])
def test_image_folder_refuses_layouts_that_would_mislabel(tmp_path, folders, match):
    with pytest.raises(pc.PlantingError, match=match):
        pc.load_data("imagefolder", image_tree(tmp_path, folders), val_size=1)


def test_an_unreadable_image_is_named_and_can_be_skipped(tmp_path, capsys):
    root = image_tree(tmp_path, {"train/a": 4, "train/b": 4, "test/a": 1, "test/b": 1})
    (root / "train" / "b" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not an image")
    with pytest.raises(pc.PlantingError, match=r"cannot read .*train/b/broken.png .*skip_bad_images=True"):
        pc.load_data("imagefolder", root, val_size=1)
    d = pc.load_data("imagefolder", root, val_size=1, skip_bad_images=True)
    assert len(d.train) + len(d.val) == 8
    assert "skipped 1 unreadable image(s)" in capsys.readouterr().out


def test_hidden_folders_are_not_classes(tmp_path):
    root = image_tree(tmp_path, {"a": 6, "b": 6, ".ipynb_checkpoints/x": 1})
    assert pc.load_data("imagefolder", root, val_size=1).num_classes == 2


def test_test_labels_mean_the_training_classes(tmp_path):
    root = tmp_path
    for split, n in (("train", 4), ("test", 2)):
        for label, cls in enumerate(("black", "white")):
            for i in range(n):
                (root / split / cls).mkdir(parents=True, exist_ok=True)
                Image.new("RGB", (8, 8), (255 * label,) * 3).save(root / split / cls / f"{i}.png")
    d = pc.load_data("imagefolder", root, val_size=1, image_size=8)
    for split in (d.train, d.test):  # the normalised brightness tells the class: white images are label 1
        bright = split.x.mean(dim=(1, 2, 3)) > 0
        assert torch.equal(bright.long(), split.y)


# ---------------------------------------------------------------- 2: non-finite validation results
def test_a_nan_validation_loss_is_never_selected(data, teacher, initial, monkeypatch):
    real = pc.policies.Validation.__call__  # the paper's validation policy

    def validate(self, net):  # conv2's candidate validates to NaN every round
        val = real(self, net)
        return {**val, "loss": float("nan")} if getattr(net, "planted_layer", None) == 1 else val
    monkeypatch.setattr(pc.policies.Validation, "__call__", validate)
    result = pc.grow(initial, teacher, data, small_cfg(max_rounds=2, stop="fixed-rounds"), progress=False)
    h = result.history
    assert (h.loc[h["layer"] == 1, "status"] == "diverged").all() and not h.loc[h["layer"] == 1, "chosen"].any()
    for _, rnd in h[h["round"] > 0].groupby("round"):
        ok = rnd[rnd["status"] == "ok"]
        assert rnd.loc[rnd["chosen"], "val_loss"].item() == ok["val_loss"].min()
    assert result.stop_reason == "reached max_rounds=2"


def test_when_every_candidate_diverges_the_message_names_the_learning_rate(data, teacher, initial, monkeypatch):
    real = pc.policies.Validation.__call__
    monkeypatch.setattr(pc.policies.Validation, "__call__", lambda self, net: {"loss": float("inf"), "acc": 0.0,
                        "kd": float("inf")} if getattr(net, "planted_layer", None) is not None else real(self, net))
    result = pc.grow(initial, teacher, data, small_cfg(), progress=False)
    assert "every candidate of round 1 diverged" in result.stop_reason
    assert "lower the planting learning rate (plant_lr, now 0.01)" in result.stop_reason


# ---------------------------------------------------------------- 3: a run pinned to its teacher
def test_a_run_refuses_to_resume_under_another_teacher(data, teacher, initial, tmp_path):
    cfg = small_cfg(max_rounds=1, stop="fixed-rounds")
    pb.plant_and_save(initial, teacher, data, cfg, tmp_path, progress=False)
    other = pc.PlainCNN(teacher.widths, **data.model_kwargs())  # same widths, other weights
    other.load_state_dict({k: v + 0.01 for k, v in teacher.state_dict().items()})
    with pytest.raises(pc.PlantingError, match=f"grown with other settings \\(teacher: .*delete {tmp_path}"):
        pb.plant_and_save(initial, other, data, cfg, tmp_path, progress=False)
    pb.RunFolder.planted(tmp_path).unlink()  # as the message allows; the saved search state still knows
    with pytest.raises(pc.PlantingError, match="another teacher \\(its weights differ\\)"):
        pb.plant_and_save(initial, other, data, cfg, tmp_path, progress=False)


# ---------------------------------------------------------------- 4: options checked before any work
@pytest.mark.parametrize("args,words", [
    (["--channels", "0"], ["'channels'", "from 1 to 512"]),
    (["--T", "0"], ["'T'", "above 0"]),
    (["--plant-lr", "nan"], ["'plant_lr'", "above 0 and at most 10"]),
    (["--max-rounds", "0"], ["'max_rounds'", "from 1"]),
    (["--widths", "[8,-1,8,8,8]"], ["'widths'"]),
    (["--plant-epochs", "0"], ["'plant_epochs'", "from 1"]),
    (["--lr", "0"], ["'lr'", "above 0"]),
    (["--teacher-epochs", "0"], ["'teacher_epochs'", "from 1"]),
    (["--seed", "99999999999"], ["'seed'", "from 0 to 1000000"]),
    (["--channels", "100000"], ["'channels'", "from 1 to 512"]),
    (["--device", "mps"], ["mps", "not available"]),
])
def test_the_job_checks_every_option_before_any_work(tmp_path, capsys, args, words):
    code = job_main([*args, "--data-root", str(tmp_path / "nowhere"), "--out", str(tmp_path / "run")])
    one_line_error(code, capsys.readouterr().err, *words)
    assert not (tmp_path / "run").exists()  # nothing was written, nothing trained


def test_the_batch_runner_checks_list_contents_before_any_notebook(tmp_path):
    for sets, match in (({"seeds": [-1]}, "parameter 'seeds' must be"), ({"seeds": [0, 0]}, "parameter 'seeds'")):
        with pytest.raises(pc.PlantingError, match=match):
            run_batch("fashion-mnist", "smoke", sets, out=tmp_path)
    assert not (tmp_path / "notebooks").exists()


# ---------------------------------------------------------------- 6: one writer per run folder
def test_a_second_job_on_a_locked_folder_ends_at_once_naming_the_holder(tmp_path, capsys):
    with pb.RunFolder(tmp_path).lock():
        code = job_main(["--out", str(tmp_path), "--subset", "100", "--data-root", str(tmp_path / "nowhere")])
        one_line_error(code, capsys.readouterr().err, "in use by another job", f"pid {os.getpid()}")
        with pytest.raises(pc.PlantingError, match=f"in use by another job \\(pid {os.getpid()}\\)"):
            run_batch("fashion-mnist", "smoke", out=tmp_path)
        assert not (tmp_path / "notebooks").exists()


def test_a_lock_left_by_a_killed_job_does_not_block(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", "import sys\nfrom planting_core import book as pb\n"
                               f"with pb.RunFolder({str(tmp_path)!r}).lock():\n"
                               "    print('locked', flush=True); sys.stdin.read()"],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=ROOT)
    assert holder.stdout.readline().strip() == "locked"
    with pytest.raises(pc.PlantingError, match=f"pid {holder.pid}"):
        with pb.RunFolder(tmp_path).lock():
            pass
    holder.kill()
    holder.wait()
    with pb.RunFolder(tmp_path).lock() as root:  # the holder's pid file is still there, the kernel's lock is not
        assert (root / ".lock.pid").read_text().split() == [str(os.getpid()), "job"]


# ---------------------------------------------------------------- 7: a failed batch notebook keeps the good one
def test_a_failed_batch_rerun_keeps_the_good_executed_notebook(tmp_path):
    src = tmp_path / "src" / "03_tiny.ipynb"
    stray = tmp_path / "stray.state.pt"
    tiny_notebook(src, f"import os\nassert not os.path.exists({str(stray)!r}), 'stray state file'")
    out = tmp_path / "run"
    run_batch("fashion-mnist", "smoke", out=out, folder=src.parent)
    dest = out / "notebooks" / src.name
    good = dest.read_text()
    stray.write_text("")
    with pytest.raises(pc.PlantingError, match=r"03_tiny.ipynb failed: AssertionError: stray state file .*"
                                               r"03_tiny.failed.ipynb; .*03_tiny.ipynb is left as it was"):
        run_batch("fashion-mnist", "smoke", out=out, only=["03"], folder=src.parent, force=True)
    assert dest.read_text() == good
    assert "stray state file" in (out / "notebooks" / "03_tiny.failed.ipynb").read_text()


# ---------------------------------------------------------------- 8: concurrent first use of a data root
@needs_fashion_mnist
def test_processes_staging_one_data_root_at_once_all_succeed(tmp_path):
    code = ("import sys, planting_core as pc\n"
            f"d = pc.load_data('fashion-mnist', {str(tmp_path)!r}, subset=100, val_size=10, download=False)\n"
            "print(len(d.train))")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(4)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0] * 4, [err for _, err in outs]
    assert [out.strip() for out, _ in outs] == ["100"] * 4
    assert not list((tmp_path / "FashionMNIST" / "raw").glob("*.tmp"))


# ---------------------------------------------------------------- 9: one-line errors for a broken environment
@pytest.mark.parametrize("out", ["/dev/null", "file"])
def test_out_that_is_not_a_folder(tmp_path, capsys, out):
    target = tmp_path / "file" if out == "file" else Path(out)
    if out == "file":
        target.write_text("keep me")
    code = job_main(["--out", str(target), "--data-root", str(tmp_path / "nowhere")])
    one_line_error(code, capsys.readouterr().err, str(target), "is not a folder")
    assert out != "file" or target.read_text() == "keep me"


@contextmanager
def tmpfs(path: Path, options: str):
    """A small tmpfs at `path` (needs root; the test is skipped where mounting is not allowed)."""
    path.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], capture_output=True).returncode:
        pytest.skip("mounting a tmpfs needs root")
    try:
        yield path
    finally:
        subprocess.run(["umount", "--lazy", str(path)], check=True)


def test_out_on_a_read_only_mount(tmp_path, capsys):
    with tmpfs(tmp_path / "ro", "ro,size=1m") as ro:
        code = job_main(["--out", str(ro / "run"), "--data-root", str(tmp_path / "nowhere")])
    one_line_error(code, capsys.readouterr().err, "cannot create the run folder", "Read-only file system")


def test_a_full_disk_is_one_line_and_leaves_no_temp_file(tmp_path, capsys):
    from planting_core.checkpoint import write_csv
    net = pc.PlainCNN([64] * 5)  # about 0.4 MB of weights, more than the disk holds
    with tmpfs(tmp_path / "full", "size=64k") as full:
        assert cli(lambda: pc.save_checkpoint(net, full / "teacher.pt")) == 2
        one_line_error(2, capsys.readouterr().err, f"cannot write {full / 'teacher.pt'}", "free space")
        big = pd.DataFrame(np.zeros((20_000, 8)))
        assert cli(lambda: write_csv(big, full / "history.csv")) == 2  # how search and experiments write tables
        one_line_error(2, capsys.readouterr().err, f"cannot write {full / 'history.csv'}", "No space left")
        assert [p.name for p in full.iterdir() if p.name.endswith(".tmp")] == []


def test_a_truncated_gz_in_the_data_root_is_named_and_leaves_no_temp_file(tmp_path, capsys):
    for name in IDX_FILES:
        with gzip.open(tmp_path / f"{name}.gz", "wb") as f:
            f.write(b"\0" * 4096)
        data = (tmp_path / f"{name}.gz").read_bytes()
        (tmp_path / f"{name}.gz").write_bytes(data[:len(data) // 2])
    code = job_main(["--dataset", "fashion-mnist", "--data-root", str(tmp_path), "--out", str(tmp_path / "run")])
    one_line_error(code, capsys.readouterr().err, "cannot stage", "complete copy")
    assert not list(tmp_path.rglob("*.tmp"))


@needs_fashion_mnist
def test_subset_out_of_range_says_the_range_that_works(tmp_path):
    for subset in (5, 54546):
        with pytest.raises(pc.PlantingError, match=r"allowed with val_size=0.1: 6..54545"):
            pc.load_data("fashion-mnist", tmp_path, subset=subset, val_size=0.1, download=False)
    for subset in (6, 54545):  # both ends of the range the message gives do work
        assert len(pc.load_data("fashion-mnist", tmp_path, subset=subset, val_size=0.1, download=False).train) == subset
