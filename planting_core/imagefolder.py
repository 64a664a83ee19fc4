"""Your own images: root/<class>/*.png, or root/train/<class>/ and root/test/<class>/, checked before any training.

Either layout gives labels by class-folder name in sorted order, so a test label always means the same class as
a training label; anything ambiguous (train/ without test/, different class lists, unreadable files) is refused
with a message that names the folder or file. Images keep their dynamic range: 16-bit images are scaled from
0..65535 and float images from 0..1 to 8 bits (values outside those ranges from the image's own min..max), never
clipped. Symbolic links are followed, but a folder or image reached twice (a link loop, or a link to another class
or split) is refused, so no image is counted twice or crosses from test to training.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from .errors import DataNotFoundError, PlantingError

SPLITS = ("train", "test")
HELD_OUT_TEST = 6  # single-folder layout: 1 image in 6 (by seed) is the test set


def layout(root: Path) -> str:
    """"split" when root holds train/ and test/, "single" when it holds neither; one without the other is refused."""
    if not root.is_dir():
        raise DataNotFoundError(f"imagefolder: {root} is not a folder. Give the data root of a folder with one "
                                f"sub-folder of images per class (optionally split into train/ and test/).")
    present = [s for s in SPLITS if (root / s).is_dir()]
    if len(present) == 1:
        missing = next(s for s in SPLITS if s not in present)
        raise PlantingError(f"imagefolder {root}: found {present[0]}/ but no {missing}/; give both train/ and test/ "
                            f"(each with one sub-folder per class), or neither (then 1 image in {HELD_OUT_TEST} is "
                            f"held out as the test set)")
    return "split" if present else "single"


def class_names(folder: Path) -> list[str]:
    """Sub-folders of `folder`, sorted; hidden ones (.ipynb_checkpoints, .git) are not classes."""
    return sorted(e.name for e in os.scandir(folder) if e.is_dir() and not e.name.startswith("."))


def image_files(folder: Path, classes: list[str], seen: dict[str, Path]) -> list[tuple[Path, int]]:
    """(image path, label) for every image under folder/<class>/, in sorted order, walking links but refusing
    anything reached twice (a link loop, or a linked copy of another class or split); `seen` maps the real path of
    every folder and image read so far (over all splits) to the path it was reached by."""
    from torchvision.datasets.folder import IMG_EXTENSIONS
    samples = []

    def visit(path: Path) -> None:
        real = os.path.realpath(path)
        if real in seen:
            raise PlantingError(f"imagefolder: {path} is {seen[real]} again (through a symbolic link); an image "
                                f"must be reachable once, or it is counted twice or crosses between splits: remove "
                                f"the link")
        seen[real] = path

    for label, name in enumerate(classes):
        for top, dirs, files in os.walk(folder / name, followlinks=True):
            visit(Path(top))
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            for f in sorted(files):
                if f.lower().endswith(IMG_EXTENSIONS):
                    visit(Path(top) / f)
                    samples.append((Path(top) / f, label))
    return samples


def to_rgb8(img: "Image.Image") -> "Image.Image":
    """A PIL image as 8-bit RGB with its contrast kept, scaled by its mode (the same for every image of a folder):
    16-bit ("I;16*", and "I" within 0..65535, as older Pillow opens 16-bit PNGs) from 0..65535, float ("F") from
    0..1; only values outside those ranges (e.g. a float image in Hounsfield units) are stretched from the image's
    own min..max. Everything else by PIL's convert."""
    from PIL import Image
    if img.mode.startswith("I;16") or img.mode in ("I", "F"):
        a = np.nan_to_num(np.asarray(img).astype(np.float64))  # (H, W)
        low, high = a.min(), a.max()
        full = 1.0 if img.mode == "F" else 65535.0
        if low < 0 or high > full:  # outside the mode's range: this image's own range is all there is to go by
            a = (a - low) / max(high - low, 1e-12)
        else:
            a = a / full
        img = Image.fromarray(np.rint(a * 255).clip(0, 255).astype(np.uint8))
    return img.convert("RGB")


def read_images(folder: Path, classes: list[str], image_size: int, skip_bad: bool = False,
                seen: dict[str, Path] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Images uint8 (N, 3, S, S) resized to S = image_size, and labels int64 (N,) by position in `classes`
    (`seen`: the real paths already read, shared between the splits of one data root)."""
    from PIL import Image
    from torchvision import transforms

    samples = image_files(folder, classes, {} if seen is None else seen)
    present = {label for _, label in samples}
    empty = [c for i, c in enumerate(classes) if i not in present]
    if empty:
        raise PlantingError(f"imagefolder {folder}: no images found in class folder(s) {empty}; every class "
                            f"folder needs at least one image")
    to_tensor = transforms.Compose([transforms.Resize((image_size, image_size)), transforms.PILToTensor()])
    images, labels, bad = [], [], []
    for path, label in samples:
        try:
            with Image.open(path) as img:
                images.append(to_tensor(to_rgb8(img)))  # (3, S, S) uint8
        except Exception as err:  # PIL raises OSError, SyntaxError, ValueError, ... for broken files
            if not skip_bad:
                raise PlantingError(f"imagefolder: cannot read {path} ({type(err).__name__}: {err}); replace or "
                                    f"delete it, or set skip_bad_images=True to skip unreadable images") from None
            bad.append(path)
            continue
        labels.append(label)
    if bad:
        print(f"imagefolder {folder}: skipped {len(bad)} unreadable image(s), e.g. {bad[0]}", flush=True)
    if not images:
        raise PlantingError(f"imagefolder {folder}: no readable images")
    return torch.stack(images), torch.tensor(labels, dtype=torch.long)


def check_same_classes(root: Path, train: list[str], test: list[str]) -> None:
    """train/ and test/ must name the same classes, or labels would mean different classes in the two splits."""
    if train != test:
        lacks, extra = sorted(set(train) - set(test)), sorted(set(test) - set(train))
        raise PlantingError(f"imagefolder {root}: train/ and test/ must hold the same class folders; test/ lacks "
                            f"{lacks} and has extra {extra}")


def load_image_folder(root: Path, image_size: int, seed: int, skip_bad: bool = False
                      ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, int]:
    """(train images, train labels, test images, test labels, number of classes) from either layout."""
    split = layout(root) == "split"
    if split:
        classes = class_names(root / "train")
        check_same_classes(root, classes, class_names(root / "test"))
    else:
        classes = class_names(root)
    if len(classes) < 2:
        raise PlantingError(f"imagefolder {root}: found {len(classes)} class folder(s) {classes}; classification "
                            f"needs at least 2 sub-folders, one per class")
    if split:
        seen: dict[str, Path] = {}  # one record over both splits: no image may be in both
        x_tr, y_tr = read_images(root / "train", classes, image_size, skip_bad, seen)
        x_te, y_te = read_images(root / "test", classes, image_size, skip_bad, seen)
        return x_tr, y_tr, x_te, y_te, len(classes)
    x, y = read_images(root, classes, image_size, skip_bad)
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(10_000 + seed))
    n_test = max(1, len(y) // HELD_OUT_TEST)
    test, train = perm[:n_test], perm[n_test:]
    return x[train], y[train], x[test], y[test], len(classes)
