"""Property-based: over random small configurations, plant, merge and count_parameters stay consistent."""
import torch
from hypothesis import given, settings
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
