"""Property-based: over random small configurations, plant, merge and count_parameters stay consistent; over random
image folders, the loader returns consistent labels or a PlantingError."""
import tempfile
from pathlib import Path

import torch
from PIL import Image
from hypothesis import event, given, settings
from hypothesis import strategies as st

import planting_core as pc

config = st.fixed_dictionaries({
    "widths": st.lists(st.integers(1, 6), min_size=5, max_size=5),
    "layer": st.integers(0, 4),
    "channels": st.integers(1, 4),
    "layout": st.sampled_from(["cifar", "stl"]),
    "extra": st.integers(0, 7),  # image size above the layout's minimum
    "classes": st.integers(2, 12),
    "in_channels": st.integers(1, 3),
    "seed": st.integers(0, 2 ** 16),
})


@settings(max_examples=60, deadline=None)
@given(config)
def test_plant_merge_count_consistent(c):
    size = (8 if c["layout"] == "cifar" else 16) + c["extra"]
    torch.manual_seed(c["seed"])
    net = pc.PlainCNN(c["widths"], layout=c["layout"], in_channels=c["in_channels"], num_classes=c["classes"],
                      image_size=size)
    x = torch.randn(3, c["in_channels"], size, size)
    planted = pc.plant(net, c["layer"], c["channels"], init="zero")
    expected_widths = list(c["widths"])
    expected_widths[c["layer"]] += c["channels"]
    assert planted.widths == expected_widths
    assert torch.equal(planted(x), net(x))  # zero init: function-preserving, bit for bit
    merged = pc.merge(planted)
    assert torch.allclose(merged(x), planted(x), rtol=1e-5, atol=1e-6)  # one conv instead of two: rounding only
    n = pc.param_count(expected_widths, c["layout"], c["in_channels"], c["classes"], size)
    assert pc.count_parameters(planted) == pc.count_parameters(merged) == n
    trainable = sum(p.numel() for p in planted.parameters())
    assert 0 < trainable < n
    assert pc.count_parameters(net) == pc.param_count(c["widths"], c["layout"], c["in_channels"], c["classes"], size)


CLASS_NAMES = ["ant", "bee", "cat", "dog", "eel", "train"]  # "train" as a class name is a layout trap
COLOURS = {name: (30 + 40 * i, 230 - 40 * i, 90 + 20 * i) for i, name in enumerate(CLASS_NAMES)}
files = st.lists(st.sampled_from([True, True, True, True, False]), min_size=1, max_size=6)  # per file: True = a readable image
folder_layout = st.fixed_dictionaries({
    "splits": st.sampled_from([(), ("train", "test"), (), ("train", "test"), ("train",), ("test",), ("train", "val")]),
    "train": st.dictionaries(st.sampled_from(CLASS_NAMES), files, min_size=1, max_size=4),
    "test": st.dictionaries(st.sampled_from(CLASS_NAMES), files, max_size=4),
    "same_classes": st.booleans(),  # test/ holds train/'s class folders (else its own)
    "skip_bad": st.booleans(),
})


def write_classes(folder: Path, classes: dict[str, list[bool]]) -> None:
    """One sub-folder per class; readable files are plain images in the class's colour, the others are junk."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, files in classes.items():
        (folder / name).mkdir(parents=True, exist_ok=True)
        for i, readable in enumerate(files):
            if readable:
                Image.new("RGB", (5, 7), COLOURS[name]).save(folder / name / f"{i}.png")
            else:
                (folder / name / f"{i}.png").write_bytes(b"not an image")


@settings(max_examples=150, deadline=None)
@given(folder_layout)
def test_image_folder_labels_mean_the_same_classes_in_every_split_or_the_loader_refuses(c):
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        if c["same_classes"]:
            c["test"] = {name: c["test"].get(name, files) for name, files in c["train"].items()}
        if c["splits"]:
            for split, key in zip(c["splits"], ("train", "test")):
                write_classes(root / split, c[key])
        else:
            write_classes(root, c["train"])
        try:
            d = pc.load_data("imagefolder", root, val_size=1, image_size=8, skip_bad_images=c["skip_bad"])
        except pc.PlantingError as err:
            event(f"refused: {str(err).split(':')[-1][:30] if 'cannot read' not in str(err) else 'unreadable'}")
            return  # refused in words: allowed
        event("loaded")
        names = sorted(c["train"])
        assert d.num_classes == len(names)
        mean, std = torch.tensor(d.mean)[:, None, None], torch.tensor(d.std)[:, None, None]
        for split in (d.train, d.val, d.test):
            assert len(split) > 0
            pixels = (split.x.float() * std + mean) * 255  # (N, 3, 8, 8) back to 0..255
            for img, label in zip(pixels, split.y.tolist()):
                assert torch.allclose(img[:, 0, 0], torch.tensor(COLOURS[names[label]], dtype=torch.float), atol=1)

