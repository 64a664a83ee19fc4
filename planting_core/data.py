"""Datasets by name, held on the device as whole tensors; batches are taken by index."""
from __future__ import annotations

import gzip
import os
import shutil
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import torch
import torch.nn.functional as F

from .device import pick_device
from .errors import DataNotFoundError, PlantingError
from .hashing import tensor_digest
from .imagefolder import load_image_folder

DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
DOWNLOAD_TIMEOUT_S = 60  # seconds a dataset download may wait for one answer from its server
IDX_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


def default_root() -> Path:
    """Data folder: $PLANTING_DATA, else ~/.cache/planting-book/data."""
    return Path(os.environ.get("PLANTING_DATA", Path.home() / ".cache" / "planting-book" / "data")).expanduser()


@dataclass
class Split:
    """One split on the device: x (N, C, H, W) float32 normalised, y (N,) int64 labels."""
    x: torch.Tensor
    y: torch.Tensor
    index: torch.Tensor | None = None  # (N,) positions in the source dataset's split (train or test), on the CPU

    def __len__(self) -> int:
        return len(self.y)


@dataclass
class Data:
    """Train / validation / test splits of one dataset, plus what a network needs to fit it."""
    name: str
    train: Split
    val: Split
    test: Split
    num_classes: int
    in_channels: int
    image_size: int
    layout: str  # the paper's layout for this image size: "cifar" up to 64 px, else "stl"
    mean: list[float] = field(default_factory=list)
    std: list[float] = field(default_factory=list)
    images: str = ""  # digest of every train and test image (uint8 pixels) and label read: which, not just how many

    def model_kwargs(self) -> dict:
        """Keyword arguments for PlainCNN that fit this data."""
        return dict(layout=self.layout, in_channels=self.in_channels, num_classes=self.num_classes,
                    image_size=self.image_size)

    def fingerprint(self) -> str:
        """Digest of the split: dataset name, labels and source positions of every image in each split."""
        parts = {}
        for name in ("train", "val", "test"):
            split = getattr(self, name)
            parts[f"{name}.y"] = split.y
            if split.index is not None:
                parts[f"{name}.index"] = split.index
        return f"{self.name}:" + tensor_digest(parts)

    def describe(self) -> str:
        """One line: sizes of the splits and the image shape."""
        return (f"{self.name}: train {len(self.train)}, val {len(self.val)}, test {len(self.test)}, "
                f"{self.in_channels}x{self.image_size}x{self.image_size}, {self.num_classes} classes")


# ---------------------------------------------------------------- raw loaders
# Each returns (images uint8 (N, C, H, W), labels int64 (N,), num_classes) for one of train/test.
RawLoader = Callable[[Path, bool, bool], tuple[torch.Tensor, torch.Tensor, int]]
# A dataset's loader returns both: (train images, train labels, test images, test labels, num_classes).
RawSplits = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, int]


def _no_data(name: str, root: Path, err: Exception | None, hint: str = "") -> DataNotFoundError:
    msg = (f"dataset {name!r} was not found under {root} and could not be downloaded"
           + (f" ({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''})" if err else "") + ". "
           + "Either connect to the internet (it is then downloaded there), or put the files in a folder and pass "
           + "it as the data root" + (f"; {hint}" if hint else "") + ".")
    return DataNotFoundError(msg)


def _torchvision(name: str, make: Callable[[bool], object], root: Path, download: bool, hint: str = ""):
    """Build a torchvision dataset from disk, downloading only if allowed and needed (each read of the download
    waits at most DOWNLOAD_TIMEOUT_S: torchvision sets none, so a server that never answers would hang the job)."""
    try:
        return make(False)
    except RuntimeError as first:
        if not download:
            raise _no_data(name, root, first, hint) from None
    before = socket.getdefaulttimeout()
    socket.setdefaulttimeout(DOWNLOAD_TIMEOUT_S)  # torchvision's urlopen takes the default
    try:
        return make(True)
    except Exception as err:  # URLError, RuntimeError, OSError, a timeout: all mean "not here and not fetchable"
        raise _no_data(name, root, err, hint) from None
    finally:
        socket.setdefaulttimeout(before)


def _cifar(cls_name: str, classes: int) -> RawLoader:
    def load(root: Path, train: bool, download: bool):
        from torchvision import datasets
        ds = _torchvision(cls_name.lower(), lambda dl: getattr(datasets, cls_name)(str(root), train=train, download=dl),
                          root, download)
        x = torch.from_numpy(ds.data).permute(0, 3, 1, 2).contiguous()  # (N, 32, 32, 3) -> (N, 3, 32, 32)
        return x, torch.as_tensor(ds.targets, dtype=torch.long), classes
    return load


def _stl10(root: Path, train: bool, download: bool):
    from torchvision import datasets
    ds = _torchvision("stl10", lambda dl: datasets.STL10(str(root), split="train" if train else "test", download=dl),
                      root, download)
    return torch.from_numpy(ds.data).contiguous(), torch.as_tensor(ds.labels, dtype=torch.long), 10  # (N, 3, 96, 96)


def _stage_idx(src: Path, root: Path, cls_name: str) -> bool:
    """Copy the four MNIST-style idx files (plain or .gz) from `src` into torchvision's layout under `root`."""
    raw = root / cls_name / "raw"
    if all((raw / f).exists() for f in IDX_FILES):
        return True
    found = {f: next((p for p in (src / f, src / (f + ".gz")) if p.exists()), None) for f in IDX_FILES}
    if not all(found.values()):
        return False
    raw.mkdir(parents=True, exist_ok=True)
    for name, path in found.items():
        if (raw / name).exists():  # staged by another process meanwhile
            continue
        tmp = raw / f".{name}.{os.getpid()}.tmp"  # each process writes its own copy, then renames it atomically
        try:
            with (gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")) as fin, open(tmp, "wb") as fout:
                shutil.copyfileobj(fin, fout)
            os.replace(tmp, raw / name)
        except (OSError, EOFError) as err:  # a truncated or corrupt .gz, a full disk, a read-only folder
            raise DataNotFoundError(f"cannot stage {path} into {raw}: {type(err).__name__}: {err}; replace the "
                                    f"file with a complete copy") from None
        finally:
            tmp.unlink(missing_ok=True)
    return True


def _mnist_family(cls_name: str, extra_dirs: tuple[Path, ...] = (), hint: str = "") -> RawLoader:
    def load(root: Path, train: bool, download: bool):
        from torchvision import datasets
        for src in (root, root / cls_name, *extra_dirs):  # a plain folder of the idx files also works
            if src.is_dir() and _stage_idx(src, root, cls_name):
                break
        ds = _torchvision(cls_name.lower(), lambda dl: getattr(datasets, cls_name)(str(root), train=train, download=dl),
                          root, download, hint)
        return ds.data.unsqueeze(1).contiguous(), ds.targets.long(), 10  # (N, 28, 28) -> (N, 1, 28, 28)
    return load


def _both_splits(load_one: RawLoader) -> Callable[..., RawSplits]:
    """A loader of one split (train or test) made into a loader of both; image-folder options are ignored."""
    def load(root: Path, download: bool, **_: object) -> RawSplits:
        x_tr, y_tr, classes = load_one(root, True, download)
        x_te, y_te, _ = load_one(root, False, download)
        return x_tr, y_tr, x_te, y_te, classes
    return load


def _image_folder(root: Path, download: bool, image_size: int, seed: int, skip_bad_images: bool) -> RawSplits:
    return load_image_folder(root, image_size, seed, skip_bad_images)


DEBIAN_HINT = ("on Debian/Ubuntu, `apt-get install dataset-fashion-mnist` puts it in "
               f"{DEBIAN_FASHION_MNIST}, which is searched automatically")
DATASETS: dict[str, Callable[..., RawSplits]] = {
    "cifar10": _both_splits(_cifar("CIFAR10", 10)),
    "cifar100": _both_splits(_cifar("CIFAR100", 100)),
    "stl10": _both_splits(_stl10),
    "fashion-mnist": _both_splits(_mnist_family("FashionMNIST", (DEBIAN_FASHION_MNIST,), DEBIAN_HINT)),
    "mnist": _both_splits(_mnist_family("MNIST")),
    "imagefolder": _image_folder,
}


def check_dataset_name(name: str) -> str:
    """Return the normalised dataset name, or raise a PlantingError listing the known ones."""
    key = str(name).lower().replace("_", "-")
    key = {"fashionmnist": "fashion-mnist", "cifar-10": "cifar10", "cifar-100": "cifar100", "stl-10": "stl10",
           "image-folder": "imagefolder"}.get(key, key)
    if key not in DATASETS:
        raise PlantingError(f"unknown dataset {name!r}; known datasets: {', '.join(DATASETS)}")
    return key


def _val_count(n_train: int, val_size: int | float) -> int:
    """Validation images for `n_train` training images: a count as given, or a fraction of them."""
    return round(val_size * n_train) if isinstance(val_size, float) else int(val_size)


def subset_range(pool: int, val_size: int | float) -> tuple[int, int]:
    """The smallest and largest `subset` whose training and validation images fit in `pool` labelled images."""
    fits = [s for s in _subset_guesses(pool, val_size) if _val_count(s, val_size) >= 1
            and s + _val_count(s, val_size) <= pool]
    return (min(fits), max(fits)) if fits else (0, 0)


def _subset_guesses(pool: int, val_size: int | float) -> set[int]:
    """Candidates for the ends of the allowed `subset` range (exact ends lie within a few of these guesses)."""
    if not isinstance(val_size, float):
        return {1, pool - int(val_size)}
    low, high = int(0.5 / val_size), int(pool / (1 + val_size))
    return {s for c in (low, high) for s in range(max(1, c - 3), min(pool, c + 4))}


def _split_sizes(pool: int, subset: int | None, val_size: int | float) -> tuple[int, int]:
    """(training, validation) image counts drawn from `pool` labelled images, or a PlantingError saying what fits."""
    if subset is None:
        n_val = _val_count(pool, val_size)
        n_train = pool - n_val
        if n_val < 1 or n_train < 1:
            raise PlantingError(f"val_size {val_size!r} leaves {n_train} training and {n_val} validation images of "
                                f"{pool}; give a count from 1 to {pool - 1}, or a fraction that leaves both non-empty")
        return n_train, n_val
    n_val = _val_count(subset, val_size)
    if n_val >= 1 and subset + n_val <= pool:
        return subset, n_val
    lo, hi = subset_range(pool, val_size)
    allowed = f"allowed with val_size={val_size!r}: {lo}..{hi}" if hi else f"no subset fits val_size={val_size!r}"
    raise PlantingError(f"cannot draw subset={subset} training and {n_val} validation images from {pool} labelled "
                        f"images ({allowed}); change `subset` or `val_size`")


def load_data(name: str = "fashion-mnist", root: str | Path | None = None, subset: int | None = None,
              val_size: int | float = 0.1, seed: int = 0,
              device: str | torch.device | None = None, download: bool = True,
              image_size: int = 32, test_subset: int | None = None,
              skip_bad_images: bool = False) -> Data:
    """Load a dataset by name into train/val/test tensors on `device`, normalised by the training split.

    The validation split is drawn (by `seed`) from the original training set, disjoint from the training
    images; `subset` limits the training images (e.g. 5000); `val_size` is a count or a fraction of them.
    For "imagefolder", `image_size` sets the resized side and `skip_bad_images` skips unreadable files.
    """
    key = check_dataset_name(name)
    if subset is not None and (not isinstance(subset, int) or isinstance(subset, bool) or subset < 1):
        raise PlantingError(f"subset must be a positive integer or None, got {subset!r}")
    dev = pick_device(device)  # an unavailable device is named before any data is read
    root = Path(root).expanduser() if root else default_root() / ("" if key != "imagefolder" else "imagefolder")
    x_tr, y_tr, x_te, y_te, classes = DATASETS[key](root, download, image_size=image_size, seed=seed,
                                                    skip_bad_images=skip_bad_images)
    n_train, n_val = _split_sizes(len(y_tr), subset, val_size)
    perm = torch.randperm(len(y_tr), generator=torch.Generator().manual_seed(seed))
    val_idx, train_idx = perm[:n_val], perm[n_val:n_val + n_train]
    if test_subset is not None:
        x_te, y_te = x_te[:test_subset], y_te[:test_subset]
    xf = x_tr[train_idx].float().div_(255)  # (N, C, H, W) in [0, 1]
    mean, std = xf.mean(dim=(0, 2, 3)), xf.std(dim=(0, 2, 3)).clamp_min(1e-6)

    def to_split(x: torch.Tensor, y: torch.Tensor, index: torch.Tensor) -> Split:
        x = (x[index].float().div_(255) - mean[:, None, None]) / std[:, None, None]
        return Split(x.to(dev).contiguous(memory_format=torch.channels_last), y[index].to(dev), index)

    side = x_tr.shape[-1]
    test_idx = torch.arange(len(y_te))
    images = tensor_digest({"train": x_tr, "train_labels": y_tr, "test": x_te, "test_labels": y_te})
    return Data(key, to_split(x_tr, y_tr, train_idx), to_split(x_tr, y_tr, val_idx), to_split(x_te, y_te, test_idx),
                classes, x_tr.shape[1], side, "cifar" if side <= 64 else "stl", mean.tolist(), std.tolist(), images)


def batches(n: int, batch_size: int, shuffle: bool = False, generator: torch.Generator | None = None,
            device: torch.device | str = "cpu") -> Iterator[torch.Tensor]:
    """Index tensors covering range(n) in batches (shuffled with `generator` if asked; last batch may be short)."""
    order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
    order = order.to(device)
    for i in range(0, n, batch_size):
        yield order[i:i + batch_size]


def augment(x: torch.Tensor, generator: torch.Generator, flip: bool = True, pad: int = 4) -> torch.Tensor:
    """Random horizontal flip and random crop (zero padding `pad`) on the device: (B, C, H, W) -> same shape."""
    b, c, h, w = x.shape
    dev = x.device
    if flip:
        mask = (torch.rand(b, generator=generator) < 0.5).to(dev)  # (B,)
        x = torch.where(mask[:, None, None, None], x.flip(3), x)
    if pad > 0:
        xp = F.pad(x, (pad, pad, pad, pad))  # (B, C, H+2p, W+2p)
        oy = torch.randint(0, 2 * pad + 1, (b,), generator=generator).to(dev)
        ox = torch.randint(0, 2 * pad + 1, (b,), generator=generator).to(dev)
        rows = (oy[:, None] + torch.arange(h, device=dev))[:, None, :, None]  # (B, 1, H, 1)
        cols = (ox[:, None] + torch.arange(w, device=dev))[:, None, None, :]  # (B, 1, 1, W)
        bidx = torch.arange(b, device=dev)[:, None, None, None]
        cidx = torch.arange(c, device=dev)[None, :, None, None]
        x = xp[bidx, cidx, rows, cols]  # (B, C, H, W)
    return x.contiguous(memory_format=torch.channels_last)
