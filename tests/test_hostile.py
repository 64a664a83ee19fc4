"""Hostile-user cases, round three (issue 30), one group per defect class; each failed on the main branch before it:

    1 a run folder reused for other data          5 checkpoints that force huge allocations
    2 ranks with different arguments             6 writers the lock does not cover
    3 images destroyed on reading                7 tracebacks instead of one line
    4 unbounded fetches
"""
from __future__ import annotations

import http.server
import json
import os
import socket
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import planting_core as pc
from planting_core.book.run import main as job_main
from test_reliability import one_line_error

TINY_JOB = ["--dataset", "imagefolder", "--val-size", "2", "--image-size", "8", "--teacher-width", "4",
            "--widths", "4,4,4,4,4", "--teacher-epochs", "1", "--epochs", "1", "--plant-epochs", "1",
            "--max-rounds", "1", "--no-progress"]


def noise_folder(root: Path, offset: int, per_class: int = 6) -> Path:
    """root/cat and root/dog with `per_class` random 12x12 images each, drawn from seeds offset..."""
    for c, cls in enumerate(("cat", "dog")):
        for i in range(per_class):
            rng = np.random.default_rng(offset + 100 * c + i)
            (root / cls).mkdir(parents=True, exist_ok=True)
            Image.fromarray(rng.integers(0, 256, (12, 12, 3), dtype=np.uint8)).save(root / cls / f"{i}.png")
    return root


# ---------------------------------------------------------------- 1: a run folder reused for other data
def test_a_run_folder_made_from_other_images_of_the_same_counts_is_refused(tmp_path, capsys):
    first, second = noise_folder(tmp_path / "a", 0), noise_folder(tmp_path / "b", 1000)
    out = tmp_path / "out"
    assert job_main([*TINY_JOB, "--data-root", str(first), "--out", str(out)]) == 0
    capsys.readouterr()
    assert job_main([*TINY_JOB, "--data-root", str(second), "--out", str(out)]) == 2
    one_line_error(2, capsys.readouterr().err, "teacher.pt", "made from other images", "another run folder")


def test_the_pixel_digest_sees_content_not_counts(tmp_path):
    a = pc.load_data("imagefolder", noise_folder(tmp_path / "a", 0), val_size=2, image_size=8)
    b = pc.load_data("imagefolder", noise_folder(tmp_path / "b", 1000), val_size=2, image_size=8)
    again = pc.load_data("imagefolder", tmp_path / "a", val_size=2, image_size=8)
    assert a.fingerprint() == b.fingerprint()  # labels and positions agree: only the pixels tell them apart
    assert a.images != b.images and a.images == again.images


# ---------------------------------------------------------------- 3: images destroyed on reading
def contrast_folder(root: Path, kind: str, per_class: int = 4) -> Path:
    """Two classes told apart only by brightness, saved as 16-bit PNG or float TIFF."""
    for c, level in (("dark", 0.2), ("light", 0.8)):
        (root / c).mkdir(parents=True)
        for i in range(per_class):
            a = np.full((8, 8), level) + np.random.default_rng(i).uniform(-0.05, 0.05, (8, 8))
            if kind == "png16":
                Image.fromarray((a * 65535).astype(np.uint16)).save(root / c / f"{i}.png")
            else:
                Image.fromarray(a.astype(np.float32)).save(root / c / f"{i}.tiff")
    return root


@pytest.mark.parametrize("kind", ["png16", "tiff-float"])
def test_16_bit_and_float_images_keep_their_contrast(tmp_path, kind):
    from planting_core.imagefolder import read_images
    root = contrast_folder(tmp_path, kind)
    x, y = read_images(root, ["dark", "light"], 8)  # (8, 3, 8, 8) uint8
    dark, light = x[y == 0].float().mean().item(), x[y == 1].float().mean().item()
    assert 40 < dark < 62 and 193 < light < 215, (dark, light)  # 0.2 and 0.8 of 255, not 255 or 0 everywhere


def test_a_16_bit_png_folder_trains_on_its_real_contrast(tmp_path):
    data = pc.load_data("imagefolder", contrast_folder(tmp_path, "png16", per_class=24), val_size=4, image_size=8)
    net = pc.PlainCNN([4] * 5, **data.model_kwargs())
    pc.fit(net, data, pc.TrainConfig(epochs=6, lr=0.02, batch_size=8, progress=False))
    assert pc.evaluate(net, data.test)["acc"] == 1.0  # clipped to 255 everywhere, it stays at chance (0.5)


def test_a_float_image_outside_0_1_is_stretched_not_clipped():
    from planting_core.imagefolder import to_rgb8
    img = Image.fromarray(np.linspace(-3.0, 40.0, 64, dtype=np.float32).reshape(8, 8))
    a = np.asarray(to_rgb8(img))  # (8, 8, 3)
    assert a.min() == 0 and a.max() == 255 and len(np.unique(a)) == 64


def test_a_symlink_loop_in_a_class_folder_is_refused(tmp_path):
    root = noise_folder(tmp_path / "data", 0)
    os.symlink(root / "cat", root / "cat" / "again")
    with pytest.raises(pc.PlantingError, match="through a symbolic link"):
        pc.load_data("imagefolder", root, val_size=2, image_size=8)


def test_a_link_from_training_to_test_images_is_refused(tmp_path):
    for split in ("train", "test"):
        noise_folder(tmp_path / split, 0 if split == "train" else 500)
    os.symlink(tmp_path / "test" / "dog", tmp_path / "train" / "dog" / "borrowed")
    with pytest.raises(pc.PlantingError, match=r"test/dog is .*train/dog/borrowed again"):
        pc.load_data("imagefolder", tmp_path, val_size=2, image_size=8)


# ---------------------------------------------------------------- 4: unbounded fetches
@contextmanager
def hostile_server(body: str):
    """An HTTP server on 127.0.0.1 whose every answer misbehaves: "endless" streams zeros for ever, "huge" announces
    10**12 bytes, "drip" sends a byte every 0.2 s. Yields its base address."""
    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args) -> None:
            pass

        def do_GET(self) -> None:
            self.send_response(200)
            if body == "huge":
                self.send_header("Content-Length", str(10**12))
            self.end_headers()
            try:
                while True:
                    self.wfile.write(b"\0" * (65536 if body != "drip" else 1))
                    self.wfile.flush()
                    if body == "drip":
                        time.sleep(0.2)
            except OSError:  # the client hung up: what a bounded fetch does
                pass
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


def serve_manifest_and(tmp_path: Path, body: str, monkeypatch) -> tuple[str, Path]:
    """A manifest (served from a file:// folder) whose one file lives on a hostile server; where it lands."""
    fetch = pc.book.fetch
    monkeypatch.setattr(fetch, "DEADLINE_S", 1.5)
    published = tmp_path / "published"
    published.mkdir()
    (published / fetch.MANIFEST).write_text(json.dumps({"format": fetch.FORMAT, "params": {},
                                                         "files": {"teacher.pt": "0" * 64},
                                                         "sizes": {"teacher.pt": 4 * 2**20}}))
    return published.as_uri(), tmp_path / "local"


@pytest.mark.parametrize("body,says", [("endless", "more than the 4,194,304 bytes"),
                                       ("huge", "announces 1,000,000,000,000 bytes"),
                                       ("drip", "not complete after 1.5 s")])
def test_a_hostile_download_stops_at_its_limit_with_one_line_and_no_partial_file(tmp_path, monkeypatch, capsys,
                                                                                 body, says):
    fetch = pc.book.fetch
    manifest_url, local = serve_manifest_and(tmp_path, body, monkeypatch)
    with hostile_server(body) as url:
        real = fetch.stream_url
        monkeypatch.setattr(fetch, "stream_url", lambda u, sink, n: real(u.replace(manifest_url, url), sink, n)
                            if u.endswith(".pt") else real(u, sink, n))
        t0 = time.monotonic()
        assert fetch.fetch_checkpoints(local, manifest_url, progress=False) == 0
    assert time.monotonic() - t0 < 30
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 2 and "could not fetch teacher.pt" in lines[0] and says in lines[0], lines
    assert not local.exists() or list(local.rglob("*")) == []


def test_an_endless_manifest_is_read_only_up_to_its_cap(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(pc.book.fetch, "MAX_MANIFEST_BYTES", 2**20)
    with hostile_server("endless") as url:
        assert pc.book.fetch_checkpoints(tmp_path / "local", url, progress=False) == 0
    out = capsys.readouterr().out
    assert "more than the 1,048,576 bytes" in out and len(out.strip().splitlines()) == 1


def test_a_dataset_server_that_never_answers_ends_in_one_line(tmp_path, monkeypatch):
    import torchvision
    with socket.socket() as silent:  # accepts connections (the backlog) and never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        monkeypatch.setattr(torchvision.datasets.CIFAR10, "url", f"http://127.0.0.1:{silent.getsockname()[1]}/c.tgz")
        monkeypatch.setattr(pc.data, "DOWNLOAD_TIMEOUT_S", 1)
        t0 = time.monotonic()
        with pytest.raises(pc.PlantingError, match="could not be downloaded"):
            pc.load_data("cifar10", tmp_path / "data")
    assert time.monotonic() - t0 < 30


# ---------------------------------------------------------------- 7: tracebacks instead of one line
@pytest.mark.parametrize("manifest,says", [
    ({"format": "planting-book-checkpoints/1", "params": {}}, "'files' must map"),
    ({"format": "planting-book-checkpoints/1", "params": {}, "files": ["teacher.pt"]}, "'files' must map"),
    (["teacher.pt"], "is not a checkpoint manifest"),
    ({"format": "planting-book-checkpoints/1", "params": [], "files": {}}, "'params' must map"),
    ({"format": "planting-book-checkpoints/1", "params": {}, "files": {"a\nb.pt": "0" * 64}}, "unusable name"),
    ({"format": "planting-book-checkpoints/1", "params": {}, "files": {"a\0.pt": "0" * 64}}, "unusable name"),
    ({"format": "planting-book-checkpoints/1", "params": {}, "files": {"a.pt": "0" * 64}, "sizes": {"a.pt": -1}},
     "'sizes' must map"),
])
def test_a_malformed_manifest_is_one_line(tmp_path, manifest, says):
    (tmp_path / "published").mkdir()
    (tmp_path / "published" / pc.book.fetch.MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(pc.PlantingError, match=says):
        pc.book.fetch_checkpoints(tmp_path / "local", (tmp_path / "published").as_uri(), progress=False)
    assert not (tmp_path / "local").exists()


def edited_checkpoint(path: Path, kind: str, **fields) -> Path:
    """A small checkpoint with some of its top-level fields replaced, as an older torch file or as safetensors."""
    from planting_core.checkpoint import FORMAT, checkpoint_bytes, network_record
    obj = {"format": FORMAT, **network_record(pc.PlainCNN([4] * 5)), "meta": {}, **fields}
    if kind == "torch":
        torch.save(obj, path)
    else:
        from safetensors.torch import save
        state = obj.pop("state")
        header = {"format": obj.pop("format"), "meta": json.dumps(obj.pop("meta")), "network": json.dumps(obj)}
        path.write_bytes(save(state, metadata=header) if isinstance(state, dict) else b"{}")
    return path


@pytest.mark.parametrize("kind", ["torch", "safetensors"])
@pytest.mark.parametrize("fields,says", [({"arch": [4, 4]}, "arch and state must be mappings"),
                                         ({"meta": ["a", "list"]}, "metadata must be a mapping")])
def test_a_checkpoint_of_the_wrong_shape_is_one_line(tmp_path, fields, says, kind):
    with pytest.raises(pc.CheckpointError, match=says):
        pc.load_checkpoint(edited_checkpoint(tmp_path / "net.pt", kind, **fields))


def test_a_torch_checkpoint_whose_state_is_not_a_mapping_is_one_line(tmp_path):
    with pytest.raises(pc.CheckpointError, match="arch and state must be mappings"):
        pc.load_checkpoint(edited_checkpoint(tmp_path / "net.pt", "torch", state="weights"))


@pytest.mark.parametrize("table,says", [
    ("file,seconds\nteacher.pt,fast\n", "line 2: needs a file name"),
    ("file\nteacher.pt\n", r"lacks the column\(s\) \['seconds'\]"),
    ("file,seconds\nteacher.pt,-5\n", "seconds='-5'"),
    ("file,seconds\n../../etc/passwd,5\n", "file='../../etc/passwd'"),
    ("file,seconds\nteacher.pt,nan\n", "seconds='nan'"),
])
def test_a_malformed_left_out_table_is_one_line_not_counted(tmp_path, table, says):
    (tmp_path / "left-out.csv").write_text(table)
    with pytest.raises(pc.PlantingError, match=says):
        pc.book.RunFolder(tmp_path).left_out()


# ---------------------------------------------------------------- 5: checkpoints that force huge allocations
def test_an_edited_round_count_in_a_planting_state_is_refused(data, teacher, initial, tmp_path):
    from conftest import small_cfg
    pc.grow(initial, teacher, data, small_cfg(max_rounds=1), out_dir=tmp_path, progress=False)
    state = torch.load(tmp_path / "grow_state.pt", weights_only=True)
    torch.save({**state, "round": 7, "stop_reason": ""}, tmp_path / "grow_state.pt")
    with pytest.raises(pc.PlantingError, match=r"not a consistent planting state \(history rounds \[0, 1\] with "
                                               r"the next round 7\)"):
        pc.grow(initial, teacher, data, small_cfg(max_rounds=9), out_dir=tmp_path, progress=False)


# ---------------------------------------------------------------- 2: ranks with different arguments
RANK_JOB = ["--dataset", "fashion-mnist", "--subset", "512", "--val-size", "128", "--teacher-width", "8",
            "--teacher-epochs", "2", "--widths", "4,4,4,4,4", "--epochs", "1", "--max-rounds", "2", "--device", "cpu",
            "--no-progress"]
needs_gloo = pytest.mark.skipif(not torch.distributed.is_available() or not torch.distributed.is_gloo_available(),
                                reason="torch.distributed with gloo is not available")


def start_ranks(out: Path, plant_epochs: list[int], timeout_s: int = 600) -> list:
    """Two processes of one job, started by hand (as two torchrun nodes would), each with its own --plant-epochs."""
    import subprocess
    import sys
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    procs = []
    for r, epochs in enumerate(plant_epochs):
        env = {**os.environ, "OMP_NUM_THREADS": "1", "WORLD_SIZE": "2", "RANK": str(r), "LOCAL_RANK": str(r),
               "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "PLANTING_COLLECTIVE_TIMEOUT_S": str(timeout_s)}
        procs.append(subprocess.Popen([sys.executable, "-m", "planting_core", *RANK_JOB, "--plant-epochs", str(epochs),
                                       "--out", str(out)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                      text=True))
    return procs


@needs_gloo
def test_ranks_started_with_different_arguments_are_refused_before_any_work(tmp_path):
    procs = start_ranks(tmp_path / "out", [3, 1])
    for proc in procs:
        _, err = proc.communicate(timeout=300)
        one_line_error(proc.returncode, err, "plant_epochs=1 on rank 1 but 3 on rank 0", "same arguments")
    assert not (tmp_path / "out" / "teacher.pt").exists()


@needs_gloo
def test_a_stopped_rank_ends_the_others_with_one_line_naming_it(tmp_path):
    import signal
    rank0, rank1 = start_ranks(tmp_path / "out", [1, 1], timeout_s=15)
    try:
        while "train 512" not in rank0.stdout.readline():  # the data are loaded: the teacher trains next
            assert rank0.poll() is None
        os.kill(rank1.pid, signal.SIGSTOP)
        t0 = time.monotonic()
        _, err = rank0.communicate(timeout=300)
    finally:
        rank1.kill()
        rank1.wait()
    one_line_error(rank0.returncode, err, "rank 0 waited 15 s", "rank(s) 1 stopped answering")
    assert time.monotonic() - t0 < 120


# ---------------------------------------------------------------- 6: writers the lock does not cover
def test_a_notebook_run_directly_on_a_locked_folder_writes_nothing(tmp_path, monkeypatch):
    import papermill
    from tools.batch import NOTEBOOK_DIR, ROOT
    monkeypatch.setenv("PYTHONPATH", str(ROOT))  # the kernel imports planting_core from this checkout
    out = tmp_path / "run"
    with pc.book.RunFolder(out).lock():
        with pytest.raises(papermill.PapermillExecutionError, match="in use by another job"):
            papermill.execute_notebook(str(NOTEBOOK_DIR / "01_teacher.ipynb"), str(tmp_path / "copy.ipynb"),
                                       parameters={"out_dir": str(out), "subset": 256, "teacher_epochs": 1},
                                       progress_bar=False, cwd=str(tmp_path))
    assert sorted(p.name for p in out.iterdir()) == [".lock", ".lock.pid"]


def test_a_notebook_kernel_holding_a_folder_is_named_as_such(tmp_path):
    import subprocess
    import sys
    holder = subprocess.Popen([sys.executable, "-c", "import sys\nfrom planting_core import book as pb\n"
                               f"pb.RunFolder({str(tmp_path)!r}).claim()\nprint('held', flush=True)\nsys.stdin.read()"],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(pc.PlantingError, match=rf"in use by a notebook's kernel \(pid {holder.pid}\).*Shut Down"):
            with pc.book.RunFolder(tmp_path).lock():
                pass
    finally:
        holder.kill()
        holder.wait()


@pytest.mark.parametrize("argv,says", [
    (["--out", "."], "over (or into) the source notebooks"),
    (["--out", "notebooks"], "over (or into) the source notebooks"),
    (["--set", "dataset=mnist"], "--set dataset=mnist contradicts --dataset fashion-mnist"),
])
def test_the_batch_runner_refuses_to_overwrite_sources_or_mislabel_a_run(argv, says, capsys, monkeypatch):
    from tools.batch import ROOT, main
    monkeypatch.chdir(ROOT)
    before = {p: p.read_bytes() for p in (ROOT / "notebooks").glob("*.ipynb")}
    one_line_error(main(["--dataset", "fashion-mnist", "--profile", "smoke", *argv]), capsys.readouterr().err, says)
    assert {p: p.read_bytes() for p in (ROOT / "notebooks").glob("*.ipynb")} == before
