"""Shared fixtures: tiny synthetic datasets and networks, so each test runs in seconds on a CPU."""
from __future__ import annotations

import contextlib
import functools
import http.server
import os
import sys
import threading
from pathlib import Path
from typing import Iterator

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
torch.set_num_threads(min(2, os.cpu_count() or 1))

import planting_core as pc  # noqa: E402


def make_data(n_train: int = 256, n_val: int = 128, n_test: int = 128, classes: int = 4, channels: int = 1,
              size: int = 16, seed: int = 0) -> pc.Data:
    """Learnable synthetic images: each class is a fixed random pattern plus noise. (N, C, size, size)."""
    g = torch.Generator().manual_seed(seed)
    protos = torch.randn(classes, channels, size, size, generator=g)

    def split(n: int) -> pc.Split:
        y = torch.randint(0, classes, (n,), generator=g)
        x = protos[y] + 0.8 * torch.randn(n, channels, size, size, generator=g)
        return pc.Split(x.contiguous(memory_format=torch.channels_last), y)
    return pc.Data("synthetic", split(n_train), split(n_val), split(n_test), classes, channels, size, "cifar")


@pytest.fixture
def data() -> pc.Data:
    return make_data()


@pytest.fixture
def teacher(data: pc.Data) -> pc.PlainCNN:
    torch.manual_seed(0)
    net = pc.PlainCNN([16] * 5, **data.model_kwargs())
    pc.fit(net, data, pc.TrainConfig(epochs=4, lr=0.02, batch_size=32, progress=False))
    return net.eval()


def tiny_notebook(src: Path, code: str):
    """Write a two-cell notebook to `src`: a parameters cell `x = 1`, then `code`; returns it (nbformat)."""
    import nbformat
    src.parent.mkdir()
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("x = 1", metadata={"tags": ["parameters"]}),
                                         nbformat.v4.new_code_cell(code)])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, src)
    return nb


def small_cfg(**kw) -> pc.GrowConfig:
    """A tiny planting search: 2 channels a step, one epoch of KD per candidate (`kw` overrides GrowConfig)."""
    kw.setdefault("channels", 2)
    return pc.GrowConfig(train=pc.TrainConfig(epochs=1, lr=0.01, batch_size=32, loss="kd", progress=False), **kw)


@pytest.fixture
def initial(data: pc.Data) -> pc.PlainCNN:
    """A [4]*5 initial network trained for one epoch."""
    torch.manual_seed(1)
    net = pc.PlainCNN([4] * 5, **data.model_kwargs())
    pc.fit(net, data, pc.TrainConfig(epochs=1, lr=0.02, batch_size=32, progress=False))
    return net


@contextlib.contextmanager
def serve(directory: Path) -> Iterator[str]:
    """Serve `directory` over HTTP on 127.0.0.1 (a free port) for a block; yields the base address."""
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args) -> None:  # no line per request
            pass
    handler = functools.partial(Quiet, directory=str(directory))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()
