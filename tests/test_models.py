import pytest
import torch

import planting_core as pc

# paper.md: exact parameter counts of the poster's networks
COUNTS = {
    ("cifar", 32, 10): [20_362, 43_914, 104_842, 281_994, 857_482],
    ("cifar", 32, 100): [31_972, 55_524, 116_452, 293_604, 869_092],
    ("stl", 96, 10): [40_842, 84_874, 186_762, 445_834, 1_185_162],
}


@pytest.mark.parametrize("layout,size,classes", list(COUNTS))
def test_paper_parameter_counts(layout, size, classes):
    for width, expected in zip([8, 16, 32, 64, 128], COUNTS[(layout, size, classes)]):
        net = pc.PlainCNN([width] * 5, layout=layout, image_size=size, num_classes=classes)
        assert pc.count_parameters(net) == expected
        assert pc.param_count([width] * 5, layout, 3, classes, size) == expected


def test_forward_shapes_and_widths():
    net = pc.PlainCNN([4, 5, 6, 7, 8], layout="stl", image_size=96, num_classes=7)
    assert net.widths == [4, 5, 6, 7, 8]
    assert net(torch.randn(2, 3, 96, 96)).shape == (2, 7)
    gray = pc.PlainCNN([8] * 5, in_channels=1, image_size=28)
    assert gray(torch.randn(3, 1, 28, 28)).shape == (3, 10)


@pytest.mark.parametrize("widths", [[8] * 4, [8] * 6, [8, 8, 0, 8, 8], [8, 8, -1, 8, 8], [8, 8, 2.5, 8, 8],
                                    "88888", None, [True] * 5])
def test_bad_widths_are_explained(widths):
    with pytest.raises(pc.PlantingError, match="widths must be a list of 5 positive integers"):
        pc.PlainCNN(widths)


def test_bad_layout_and_tiny_image():
    with pytest.raises(pc.PlantingError, match="layout must be one of"):
        pc.PlainCNN([8] * 5, layout="resnet")
    with pytest.raises(pc.PlantingError, match="too small"):
        pc.PlainCNN([8] * 5, image_size=4)
