import pytest

import planting_core as pc


@pytest.mark.parametrize("name,value", [
    ("epochs", "10"), ("epochs", 2.5), ("epochs", 0), ("epochs", True), ("lr", "0.1"), ("lr", -1.0),
    ("widths", [8, 8, 8]), ("widths", "8,8,8,8,8"), ("subset", 5000.0), ("seeds", [0, "1"]), ("device", 0),
    ("progress", "yes"), ("student_widths", [8, 0]), ("dataset", None),
])
def test_bad_parameter_is_named(name, value):
    with pytest.raises(pc.PlantingError, match=f"parameter '{name}' must be"):
        pc.check_params({name: value})


def test_good_parameters_pass():
    values = dict(dataset="fashion-mnist", data_root=None, subset=None, seed=0, seeds=[0, 1, 2], widths=[8] * 5,
                  epochs=3, lr=0.02, T=4, device="auto", out_dir="runs/x", progress=False, student_widths=[8, 16])
    assert pc.check_params(values) == values
