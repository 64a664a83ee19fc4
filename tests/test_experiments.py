import math

import pandas as pd

import planting_core as pc
from planting_core import book as pb


def students():
    rows = [("[8, 8, 8, 8, 8]", 13050, "ce", 0.80), ("[8, 8, 8, 8, 8]", 13050, "kd", 0.82),
            ("[16, 16, 16, 16, 16]", 29290, "ce", 0.84), ("[16, 16, 16, 16, 16]", 29290, "ce", 0.86),
            ("[32, 32, 32, 32, 32]", 75594, "kd", 0.90)]
    return pd.DataFrame([dict(model="student", widths=w, params=p, loss_fn=f, seed=i, test_acc=a, test_loss=1.0)
                         for i, (w, p, f, a) in enumerate(rows)])


def teacher(acc: float):
    net = pc.PlainCNN([64] * 5)
    net.meta = {"test_acc": acc}
    return net


def test_claims_compare_with_the_best_student_within_twice_the_size_and_the_teacher():
    c = pb.claims(students(), acc=0.855, params=20_000, teacher=teacher(0.858))
    assert c["near_student"] == "[16, 16, 16, 16, 16] (CE, 29,290 parameters)"  # [32] is over 2x; mean of seeds
    assert math.isclose(c["near_student_acc"], 0.85) and math.isclose(c["near_gap"], 0.5)
    assert c["size_target"] == "met" and c["teacher_target"] == "met"
    assert math.isclose(c["teacher_gap"], 0.3) and c["fraction"] < 0.2
    assert pb.claims(students(), 0.84, 20_000, teacher(0.858))["size_target"] == "missed"
    assert pb.claims(students(), 0.855, 60_000, teacher(0.858))["teacher_target"] == "missed"  # over 20%
    none = pb.claims(students(), 0.9, 5_000, teacher(0.9))
    assert none["size_target"] == "not tested" and math.isnan(none["near_gap"])


def test_loading_a_saved_network_does_not_build_its_start_again(data, tmp_path):
    """start() (e.g. pruning's costly path) is called to train, or to rebuild a network of the user's class: never
    to load a network that rebuilds from its own checkpoint."""
    calls = []

    def start() -> pc.PlainCNN:
        calls.append(1)
        return pc.PlainCNN([4] * 5, **data.model_kwargs())
    cfg = pc.TrainConfig(epochs=1, batch_size=32, progress=False)
    pb.load_or_train(tmp_path / "net.pt", None, data, cfg, start=start)
    assert calls == [1]
    again = pb.load_or_train(tmp_path / "net.pt", None, data, cfg, start=start)
    assert calls == [1] and again.widths == [4] * 5
