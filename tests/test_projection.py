"""Knowledge projection: same-resolution layer pairs, the projection's shapes, the guidance leaves the student's
output alone, and the adaptive choice takes the pair with the lowest validation joint loss."""
from __future__ import annotations

import pandas as pd
import pytest
import torch

import planting_core as pc
from planting_core import book as pb
from planting_core.book.projection import Guided, HintPenalty, block_sides, choose_pair, joint_loss, layer_pairs

CFG = pc.TrainConfig(epochs=1, lr=0.01, batch_size=32, progress=False)


def test_pairs_have_the_same_resolution(data, teacher):
    student = pc.PlainCNN([4] * 5, **data.model_kwargs())
    pairs = layer_pairs(teacher, student)
    assert block_sides(student) == [8, 4, 4, 4, 2]  # 16x16 images, pools after conv1, conv2, conv5
    assert len(pairs) == 1 + 3 * 3 + 1 and (0, 0) in pairs and (1, 3) in pairs and (0, 1) not in pairs
    stl = pc.PlainCNN([4] * 5, layout="stl", image_size=96)
    assert block_sides(stl) == [48, 24, 12, 12, 6]


def test_the_projection_maps_teacher_channels_to_student_channels(data, teacher):
    student = pc.PlainCNN([4, 6, 5, 3, 7], **data.model_kwargs()).eval()
    guided = Guided(student, teacher, t=2, s=3).eval()
    assert guided.proj.weight.shape == (3, teacher.widths[2], 1, 1)
    x = data.val.x[:8]
    with torch.no_grad():
        torch.testing.assert_close(guided(x), student(x))  # guidance adds a loss, never changes the output
    assert guided.hint.item() > 0
    assert not any(p is q for p in guided.parameters() for q in teacher.parameters())  # the teacher is not trained


def test_guided_training_lowers_the_hint_and_leaves_the_teacher(data, teacher):
    before = pc.checkpoint.fingerprint(teacher)
    torch.manual_seed(0)
    guided = Guided(pc.PlainCNN([4] * 5, **data.model_kwargs()), teacher, 1, 1)
    start = joint_loss(guided, data, 1.0)
    pc.fit(guided, data, pc.TrainConfig(epochs=3, lr=0.02, batch_size=32, progress=False), penalty=HintPenalty(1.0))
    assert joint_loss(guided, data, 1.0) < start
    assert pc.checkpoint.fingerprint(teacher) == before


def test_the_chosen_pair_has_the_lowest_validation_joint_loss(data, teacher):
    def fresh():
        torch.manual_seed(0)
        return pc.PlainCNN([4] * 5, **data.model_kwargs())
    guided, pairs = choose_pair(teacher, fresh, data, CFG, guide_epochs=1, hint_weight=0.5)
    assert list(pairs.columns) == ["teacher_layer", "student_layer", "val_joint_loss", "seconds"] and len(pairs) == 11
    best = pairs.loc[pairs["val_joint_loss"].idxmin()]
    assert (guided.t + 1, guided.s + 1) == (best["teacher_layer"], best["student_layer"])
    assert joint_loss(guided, data, 0.5) == pytest.approx(best["val_joint_loss"], rel=1e-5)


def test_load_or_project_writes_the_pair_table_and_loads_on_rerun(data, teacher, tmp_path):
    net = pb.projection.load_or_project(tmp_path / "p.pt", teacher, [4] * 5, data, CFG, 1, 0.5)
    assert net.widths == [4] * 5 and len(pd.read_csv(tmp_path / "p-pairs.csv")) == 11
    again = pb.projection.load_or_project(tmp_path / "p.pt", teacher, [4] * 5, data, CFG, 1, 0.5)
    assert pc.checkpoint.fingerprint(again) == pc.checkpoint.fingerprint(net)
    with pytest.raises(pc.PlantingError, match="hint_weight"):
        pb.projection.load_or_project(tmp_path / "p.pt", teacher, [4] * 5, data, CFG, 1, 0.1)
