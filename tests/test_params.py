"""The parameter table is the one home of every default: config objects, the CLI, notebooks and profiles agree."""
import dataclasses
import json

import pytest

import planting_core as pc
from planting_core import book as pb
from planting_core.book.run import JOB_PARAMS, parse_args
from tools.batch import NOTEBOOK_DIR, notebook_parameters, notebooks
from tools.sync_params import expected_source, parameters_cell


@pytest.mark.parametrize("name,value", [
    ("epochs", "10"), ("epochs", 2.5), ("epochs", 0), ("epochs", True), ("lr", "0.1"), ("lr", -1.0), ("lr", 0.0),
    ("lr", float("nan")), ("widths", [8, 8, 8]), ("widths", "8,8,8,8,8"), ("subset", 5000.0), ("subset", 0),
    ("seeds", [0, "1"]), ("seeds", []), ("seeds", [-1]), ("seeds", [1, 1]), ("device", 0), ("device", "tpu"),
    ("progress", "yes"), ("student_widths", [8, 0]), ("dataset", None), ("dataset", "imagenet"), ("T", 0),
    ("channels", 0), ("max_rounds", 0), ("plant_epochs", 0), ("teacher_epochs", 0), ("quick", "abc"),
    ("out_dir", ""), ("seed", 10 ** 12), ("select", "best"), ("propose", "random"), ("stop", "never"),
])
def test_bad_parameter_is_named_with_what_is_allowed(name, value):
    with pytest.raises(pc.PlantingError, match=f"parameter '{name}' must be .+, got"):
        pb.check_params({name: value})


def test_good_parameters_pass():
    values = dict(dataset="fashion-mnist", data_root=None, subset=None, seed=0, seeds=[0, 1, 2], widths=[8] * 5,
                  epochs=3, lr=0.02, T=4, device="auto", out_dir="runs/x", progress=False, student_widths=[8, 16],
                  select="drop_per_param", propose="round-robin", stop="fixed-rounds", val_size=64)
    assert pb.check_params(values) == values


def test_every_default_passes_its_own_check():
    for name, param in pb.PARAMS.items():
        assert param.valid(param.default), name


def test_config_objects_take_their_defaults_from_the_table():
    for cfg in (pc.TrainConfig(), pc.GrowConfig()):
        for f in dataclasses.fields(cfg):
            if f.name in pb.DEFAULTS:
                assert getattr(cfg, f.name) == pb.DEFAULTS[f.name], f.name
    grow = pc.GrowConfig()
    assert (grow.train.epochs, grow.train.lr, grow.train.loss) == (pb.DEFAULTS["plant_epochs"], pb.DEFAULTS["plant_lr"],
                                                                   "kd")


def test_the_command_line_options_come_from_the_table():
    args = parse_args([])
    for name in JOB_PARAMS:
        assert getattr(args, name) == pb.DEFAULTS[name], name
    a = parse_args(["--subset", "5000", "--widths", "4,4,8,8,8", "--lr", "1", "--root", "/data", "--max-rounds", "None",
                    "--no-progress"])
    assert (a.subset, a.widths, a.lr, a.data_root, a.max_rounds, a.progress) == (5000, [4, 4, 8, 8, 8], 1.0, "/data",
                                                                                   None, False)


@pytest.mark.parametrize("path", notebooks(NOTEBOOK_DIR), ids=lambda p: p.name)
def test_every_notebook_parameters_cell_agrees_with_the_table(path):
    nb, names = parameters_cell(path)
    cell = next(c for c in nb["cells"] if "parameters" in c.get("metadata", {}).get("tags", []))
    assert "".join(cell["source"]).strip() == expected_source(names), \
        f"{path.name}: its parameters cell differs from the table; run `python -m tools.sync_params`"
    assert notebook_parameters(path) == {n: pb.DEFAULTS[n] for n in names}


def test_profiles_hold_only_allowed_values():
    for name, overrides in pb.PROFILES.items():
        pb.check_params(overrides, known_only=True)


def test_configs_map_flat_parameters_in_one_place():
    params = {"plant_epochs": 7, "plant_lr": 0.05, "T": 2.0, "channels": 3, "select": "val_kd", "lr": 0.01,
              "epochs": 5, "teacher_epochs": 6}
    grow = pb.grow_config(params, seed=4, finetune_old=True, train_loss="ce")
    assert (grow.channels, grow.select, grow.finetune_old) == (3, "val_kd", True)
    assert (grow.train.epochs, grow.train.lr, grow.train.T, grow.train.seed, grow.train.loss) == (7, 0.05, 2.0, 4, "ce")
    student = pb.student_config(params, seed=2, loss="kd")
    assert (student.epochs, student.lr, student.T, student.seed, student.loss) == (5, 0.01, 2.0, 2, "kd")
    assert pb.teacher_config(params).epochs == 6
    with pytest.raises(pc.PlantingError, match="parameter 'channels' must be"):
        pb.grow_config({"channels": 0}, seed=0)
    assert json.dumps(pb.DEFAULTS)  # plain values only


@pytest.mark.parametrize("dataset, teacher, initial", [("cifar10", 128, 8), ("cifar100", 128, 16), ("stl10", 64, 8)])
def test_paper_profile_sets_the_posters_networks(dataset, teacher, initial, tmp_path):
    from tools.batch import plan_batch
    params = pb.profile_params("paper", dataset)
    assert pb.check_params(params) == params  # every value allowed by the table
    assert (params["teacher_width"], params["widths"]) == (teacher, [initial] * 5)
    assert params["augment"] and params["crop_pad"] == 4 and params["lr"] == 0.01 and params["seeds"] == [0, 1, 2]
    plan = plan_batch(dataset, "paper", {}, tmp_path, ["01"])
    assert plan[0][2]["teacher_width"] == teacher and plan[0][2]["dataset"] == dataset


def test_paper_profile_refuses_other_datasets():
    with pytest.raises(pc.PlantingError, match="profile 'paper' reproduces the poster"):
        pb.profile_params("paper", "fashion-mnist")
    with pytest.raises(pc.PlantingError, match="unknown profile 'papr'"):
        pb.profile_params("papr", "cifar10")


def test_no_search_field_looks_like_a_training_change():
    """grow_config reads train_<field> as a change to the candidates' TrainConfig: a GrowConfig field with that
    prefix could never be set through it."""
    from dataclasses import fields
    assert [f.name for f in fields(pc.GrowConfig) if f.name.startswith("train")] == ["train"]
    cfg = pb.grow_config(pb.with_defaults({}), 0, finetune_head=True, stop_split=True, train_T=2.0)
    assert (cfg.finetune_head, cfg.stop_split, cfg.train.T) == (True, True, 2.0)
