"""Each dataset's real torchvision loading path, on tiny files written in its exact on-disk format."""
import gzip
import os
import pickle
import struct

import numpy as np
import pytest
import torch
from PIL import Image

import planting_core as pc
import planting_core.data as pdata


@pytest.fixture
def no_md5(monkeypatch):
    """torchvision checks CIFAR/STL-10 files against the real files' MD5 sums; tiny test files cannot match."""
    import torchvision.datasets.cifar as cifar
    import torchvision.datasets.stl10 as stl10
    exists = lambda fpath, md5=None: os.path.isfile(fpath)  # noqa: E731
    monkeypatch.setattr(cifar, "check_integrity", exists)
    monkeypatch.setattr(stl10, "check_integrity", exists)


@pytest.fixture(autouse=True)
def no_debian(monkeypatch, tmp_path):
    """Keep the machine's Debian Fashion-MNIST out of these tests, so they see only the files they write."""
    monkeypatch.setitem(pdata.DATASETS, "fashion-mnist", pdata._both_splits(
        pdata._mnist_family("FashionMNIST", (tmp_path / "debian",), pdata.DEBIAN_HINT)))


def images(n, c, h, w, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, c, h, w), dtype=np.uint8)


def write_cifar(root, hundred=False, n=6):
    folder = root / ("cifar-100-python" if hundred else "cifar-10-batches-py")
    folder.mkdir(parents=True)
    key = "fine_labels" if hundred else "labels"
    classes = 100 if hundred else 10
    names = ["train", "test"] if hundred else [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    written = {}
    for i, name in enumerate(names):
        x = images(n, 3, 32, 32, seed=i)
        y = [(i + j) % classes for j in range(n)]
        with open(folder / name, "wb") as f:  # (N, 3072) uint8 rows: R plane, G plane, B plane
            pickle.dump({"data": x.reshape(n, -1), key: y, "batch_label": name}, f, protocol=2)
        written[name] = (x, y)
    meta = {"fine_label_names": [f"c{i}" for i in range(100)]} if hundred else {"label_names": [f"c{i}" for i in range(10)]}
    with open(folder / ("meta" if hundred else "batches.meta"), "wb") as f:
        pickle.dump(meta, f, protocol=2)
    return written


def write_idx(folder, n_train=12, n_test=5, gz=True):
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for split, n in (("train", n_train), ("t10k", n_test)):
        x = images(n, 1, 28, 28, seed=n)[:, 0]
        y = np.arange(n, dtype=np.uint8) % 10
        img = struct.pack(">IIII", 2051, n, 28, 28) + x.tobytes()  # idx3: magic, count, rows, cols, pixels
        lab = struct.pack(">II", 2049, n) + y.tobytes()  # idx1: magic, count, labels
        for name, raw in ((f"{split}-images-idx3-ubyte", img), (f"{split}-labels-idx1-ubyte", lab)):
            if gz:
                with gzip.open(folder / (name + ".gz"), "wb") as f:
                    f.write(raw)
            else:
                (folder / name).write_bytes(raw)
        out[split] = (x, y)
    return out


def sorted_rows(x: torch.Tensor) -> torch.Tensor:
    flat = x.reshape(len(x), -1)
    return flat[torch.argsort(flat[:, 0] * 1e6 + flat[:, 1] * 1e3 + flat[:, 2])]


def raw_images(d: pc.Data, split: str) -> torch.Tensor:
    """Undo the normalisation: back to uint8 pixel values."""
    s = getattr(d, split)
    mean, std = torch.tensor(d.mean)[:, None, None], torch.tensor(d.std)[:, None, None]
    return torch.round((s.x * std + mean) * 255).to(torch.uint8)


@pytest.mark.parametrize("hundred", [False, True])
def test_cifar_pickles(tmp_path, no_md5, hundred):
    written = write_cifar(tmp_path, hundred)
    d = pc.load_data("cifar100" if hundred else "cifar10", tmp_path, val_size=4, download=False)
    n_train = 6 if hundred else 30
    assert (len(d.train), len(d.val), len(d.test)) == (n_train - 4, 4, 6)
    assert (d.num_classes, d.in_channels, d.image_size, d.layout) == (100 if hundred else 10, 3, 32, "cifar")
    x_test, y_test = written["test" if hundred else "test_batch"]
    assert torch.equal(raw_images(d, "test"), torch.from_numpy(x_test))  # channel planes decoded right
    assert d.test.y.tolist() == y_test
    all_train = torch.cat([raw_images(d, "train"), raw_images(d, "val")])
    expected = torch.from_numpy(np.concatenate([v[0] for k, v in written.items() if "test" not in k]))
    assert torch.equal(sorted_rows(all_train), sorted_rows(expected))


def test_stl10_binaries(tmp_path, no_md5):
    folder = tmp_path / "stl10_binary"
    folder.mkdir()
    out = {}
    for split, n in (("train", 7), ("test", 3)):
        x = images(n, 3, 96, 96, seed=n)
        y = (np.arange(n) % 10 + 1).astype(np.uint8)  # labels stored 1..10
        # STL-10 stores each channel column-major: the file holds (N, 3, W, H)
        (folder / f"{split}_X.bin").write_bytes(x.transpose(0, 1, 3, 2).tobytes())
        (folder / f"{split}_y.bin").write_bytes(y.tobytes())
        out[split] = (x, y)
    (folder / "unlabeled_X.bin").write_bytes(b"")
    (folder / "class_names.txt").write_text("\n".join(f"c{i}" for i in range(10)))
    d = pc.load_data("stl10", tmp_path, val_size=2, download=False)
    assert (len(d.train), len(d.val), len(d.test), d.image_size, d.layout) == (5, 2, 3, 96, "stl")
    assert torch.equal(raw_images(d, "test"), torch.from_numpy(out["test"][0]))
    assert d.test.y.tolist() == (out["test"][1] - 1).tolist()
    assert pc.PlainCNN([4] * 5, **d.model_kwargs())(d.test.x).shape == (3, 10)


@pytest.mark.parametrize("name,cls_name", [("fashion-mnist", "FashionMNIST"), ("mnist", "MNIST")])
@pytest.mark.parametrize("layout", ["torchvision", "plain-folder"])
def test_mnist_family_idx_files(tmp_path, name, cls_name, layout):
    if layout == "torchvision":  # root/FashionMNIST/raw/<idx files>, as torchvision's download leaves them
        written = write_idx(tmp_path / cls_name / "raw", gz=False)
    else:  # a folder holding the four .gz files, like Debian's /usr/share/datasets/fashion-mnist
        written = write_idx(tmp_path, gz=True)
    d = pc.load_data(name, tmp_path, val_size=3, download=False, seed=1)
    assert (len(d.train), len(d.val), len(d.test), d.in_channels, d.image_size) == (9, 3, 5, 1, 28)
    assert torch.equal(raw_images(d, "test")[:, 0], torch.from_numpy(written["t10k"][0]))
    assert d.test.y.tolist() == written["t10k"][1].tolist()


def test_fashion_mnist_found_in_the_debian_folder(tmp_path):
    write_idx(tmp_path / "debian", gz=True)
    d = pc.load_data("fashion-mnist", tmp_path / "empty-root", val_size=2, download=False)
    assert len(d.test) == 5


def test_split_is_deterministic_disjoint_and_subsettable(tmp_path):
    write_idx(tmp_path, n_train=40, gz=True)
    a = pc.load_data("fashion-mnist", tmp_path, subset=10, val_size=0.5, seed=7, download=False)
    b = pc.load_data("fashion-mnist", tmp_path, subset=10, val_size=0.5, seed=7, download=False)
    c = pc.load_data("fashion-mnist", tmp_path, subset=10, val_size=0.5, seed=8, download=False)
    assert (len(a.train), len(a.val)) == (10, 5)
    assert torch.equal(a.train.x, b.train.x) and not torch.equal(a.train.x, c.train.x)
    tr, va = sorted_rows(raw_images(a, "train")), raw_images(a, "val")
    assert not any(torch.equal(v.reshape(-1), t) for v in va for t in tr)  # validation disjoint from training
    assert a.train.x.mean().abs() < 0.3  # normalised by the training split
    with pytest.raises(pc.PlantingError, match="cannot draw"):
        pc.load_data("fashion-mnist", tmp_path, subset=39, val_size=5, download=False)


def test_image_folder(tmp_path):
    rng = np.random.default_rng(0)
    for split, n in (("train", 6), ("test", 2)):
        for cls in ("cat", "dog", "owl"):
            (tmp_path / split / cls).mkdir(parents=True)
            for i in range(n):
                Image.fromarray(rng.integers(0, 256, (40, 50, 3), dtype=np.uint8)).save(tmp_path / split / cls / f"{i}.png")
    d = pc.load_data("imagefolder", tmp_path, val_size=3, image_size=24)
    assert (len(d.train), len(d.val), len(d.test), d.num_classes, d.image_size) == (15, 3, 6, 3, 24)
    assert pc.PlainCNN([4] * 5, **d.model_kwargs())(d.train.x).shape == (15, 3)


def test_image_folder_errors(tmp_path):
    (tmp_path / "empty" / "a").mkdir(parents=True)
    (tmp_path / "empty" / "b").mkdir(parents=True)
    with pytest.raises(pc.PlantingError, match="no images found"):
        pc.load_data("imagefolder", tmp_path / "empty")
    one = tmp_path / "one" / "only"
    one.mkdir(parents=True)
    Image.new("RGB", (8, 8)).save(one / "x.png")
    with pytest.raises(pc.PlantingError, match="needs at least 2 sub-folders"):
        pc.load_data("imagefolder", tmp_path / "one")


def test_unknown_dataset_lists_the_known_ones():
    with pytest.raises(pc.PlantingError, match="known datasets: cifar10, cifar100, stl10, fashion-mnist"):
        pc.load_data("imagenet")


@pytest.mark.parametrize("name", ["cifar10", "stl10", "mnist", "fashion-mnist"])
def test_missing_data_without_network_says_how_to_get_it(tmp_path, monkeypatch, name):
    import torchvision.datasets.utils as tvu

    def offline(*a, **k):
        raise RuntimeError("network is unreachable")
    for mod in ("cifar", "stl10", "mnist"):
        monkeypatch.setattr(f"torchvision.datasets.{mod}.download_and_extract_archive", offline)
    monkeypatch.setattr(tvu, "download_url", offline)
    with pytest.raises(pc.errors.DataNotFoundError, match="could not be downloaded.*internet.*data root") as err:
        pc.load_data(name, tmp_path)
    if name == "fashion-mnist":
        assert "apt-get install dataset-fashion-mnist" in str(err.value)


def test_augment_on_the_device_flips_and_crops_repeatably():
    x = torch.arange(2 * 1 * 6 * 6, dtype=torch.float32).reshape(2, 1, 6, 6)
    same = pc.data.augment(x, torch.Generator().manual_seed(0), flip=False, pad=0)
    assert torch.equal(same, x)
    a = pc.data.augment(x, torch.Generator().manual_seed(3), flip=True, pad=2)
    b = pc.data.augment(x, torch.Generator().manual_seed(3), flip=True, pad=2)
    assert a.shape == x.shape and torch.equal(a, b)
    flipped = pc.data.augment(x, torch.Generator().manual_seed(1), flip=True, pad=0)
    for img, out in zip(x, flipped):  # each image is itself or its mirror image
        assert torch.equal(out, img) or torch.equal(out, img.flip(2))
    crops = torch.stack([pc.data.augment(x, torch.Generator().manual_seed(s), flip=False, pad=2) for s in range(20)])
    assert (crops == 0).any() and not all(torch.equal(c, crops[0]) for c in crops)  # shifted, zero-padded views
    for c in crops:  # every crop is a shift of the image: its non-zero pixels come from the original
        assert set(c[c != 0].tolist()) <= set(x.flatten().tolist())
