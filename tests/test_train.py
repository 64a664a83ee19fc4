import dataclasses

import pytest
import torch

import planting_core as pc
from planting_core import book as pb


def test_training_learns_and_is_repeatable(data):
    cfg = pc.TrainConfig(epochs=3, lr=0.02, batch_size=32, progress=False, seed=3)
    runs = []
    for _ in range(2):
        torch.manual_seed(0)
        net = pc.PlainCNN([8] * 5, **data.model_kwargs())
        runs.append(pc.fit(net, data, cfg))
    assert [r["train_loss"] for r in runs[0]] == [r["train_loss"] for r in runs[1]]
    assert runs[0][-1]["val_acc"] > 0.5  # 4 classes: chance is 0.25


def test_planted_training_with_cached_frozen_part_equals_uncached(data, teacher):
    torch.manual_seed(0)
    base = pc.PlainCNN([8] * 5, **data.model_kwargs())
    results = []
    for cache in (True, False):
        planted = pc.plant(base, 2, 4, generator=torch.Generator().manual_seed(0))
        cfg = pc.TrainConfig(epochs=2, lr=0.01, batch_size=32, loss="kd", progress=False, cache_frozen=cache)
        pc.fit(planted, data, cfg, teacher=teacher)
        results.append(planted.convs[2].new_weight.detach())
    assert torch.allclose(results[0], results[1], atol=1e-5)


def test_fit_resumes_from_its_epoch_checkpoint(data, tmp_path):
    cfg = pc.TrainConfig(epochs=4, lr=0.02, batch_size=32, progress=False)
    torch.manual_seed(0)
    whole = pc.PlainCNN([8] * 5, **data.model_kwargs())
    full = pc.fit(whole, data, cfg)
    torch.manual_seed(0)
    fresh = pc.PlainCNN([8] * 5, **data.model_kwargs())
    state = tmp_path / "half.pt"

    # build a genuine half-way state: train with a hook that stops after epoch 2
    class Stop(Exception):
        pass
    calls = {"n": 0}
    orig = pc.train.evaluate

    def stopping_eval(*a, **k):
        calls["n"] += 1
        if calls["n"] == 3:  # 3rd epoch's evaluation: die before its checkpoint is written
            raise Stop
        return orig(*a, **k)
    pc.train.evaluate = stopping_eval
    try:
        with pytest.raises(Stop):
            pc.fit(fresh, data, cfg, checkpoint=state)
    finally:
        pc.train.evaluate = orig
    assert torch.load(state, weights_only=True)["epoch"] == 1  # epochs 1 and 2 saved (0-based 1)
    torch.manual_seed(123)  # a different global RNG must not matter
    resumed_net = pc.PlainCNN([8] * 5, **data.model_kwargs())
    resumed = pc.fit(resumed_net, data, cfg, checkpoint=state)
    assert [r["train_loss"] for r in resumed] == [r["train_loss"] for r in full]
    for a, b in zip(resumed_net.parameters(), whole.parameters()):
        assert torch.equal(a, b)


def test_resume_with_other_settings_is_refused(data, tmp_path):
    net = pc.PlainCNN([8] * 5, **data.model_kwargs())
    pc.fit(net, data, pc.TrainConfig(epochs=1, progress=False), checkpoint=tmp_path / "s.pt")
    with pytest.raises(pc.PlantingError, match="other settings"):
        pc.fit(net, data, pc.TrainConfig(epochs=1, lr=0.5, progress=False), checkpoint=tmp_path / "s.pt")


def test_nan_loss_is_reported(data):
    net = pc.PlainCNN([8] * 5, **data.model_kwargs())
    overflowing = dataclasses.replace(data, train=pc.Split(data.train.x * 1e38, data.train.y))  # logits overflow
    with pytest.raises(pc.errors.NonFiniteLossError, match="lower the learning rate"):
        pc.fit(net, overflowing, pc.TrainConfig(epochs=2, progress=False))


@pytest.mark.parametrize("field,value,match", [
    ("epochs", -1, "'epochs' must be an integer from 1 to"), ("epochs", 0, "'epochs' must be an integer from 1 to"),
    ("batch_size", 0, "'batch_size' must be"), ("loss", "mse", "loss must be one of"),
    ("lr", "0.1", "'lr' must be a number above 0"), ("lr", 0.0, "'lr' must be a number above 0"),
    ("T", 0.0, "'T' must be a number above 0"), ("lr", float("nan"), "'lr' must be a number above 0"),
])
def test_bad_config_is_explained(data, field, value, match):
    net = pc.PlainCNN([8] * 5, **data.model_kwargs())
    with pytest.raises(pc.PlantingError, match=match):
        pc.fit(net, data, pc.TrainConfig(**{field: value, "progress": False}))


def test_teacher_student_mismatch(data, teacher):
    student = pc.PlainCNN([8] * 5, layout="cifar", in_channels=1, num_classes=7, image_size=16)
    with pytest.raises(pc.PlantingError, match="disagree in num_classes"):
        pc.fit(student, data, pc.TrainConfig(loss="kd", progress=False), teacher=teacher)


def test_pick_device():
    assert pc.pick_device("cpu").type == "cpu"
    assert pc.pick_device(None).type in ("cpu", "cuda", "mps")
    with pytest.raises(pc.PlantingError, match="device must be"):
        pc.pick_device("tpu9")
    if not torch.cuda.is_available():
        with pytest.raises(pc.PlantingError, match="no CUDA GPU"):
            pc.pick_device("cuda")


def test_load_or_train_trains_once_then_refuses_other_settings(data, tmp_path):
    cfg = pc.TrainConfig(epochs=1, lr=0.02, batch_size=32, progress=False)
    first = pb.load_or_train(tmp_path / "n.pt", [4] * 5, data, cfg, seed=1)
    again = pb.load_or_train(tmp_path / "n.pt", [4] * 5, data, cfg, seed=1)  # loaded, not retrained
    assert all(torch.equal(a, b) for a, b in zip(first.state_dict().values(), again.state_dict().values()))
    assert first.meta["history"][0]["epoch"] == 1 and not (tmp_path / "n.state.pt").exists()
    with pytest.raises(pc.PlantingError, match=r"n.pt was trained with other settings \(lr: 0.02 there, 0.5 now\)"):
        pb.load_or_train(tmp_path / "n.pt", [4] * 5, data, pc.TrainConfig(epochs=1, lr=0.5, batch_size=32,
                                                                          progress=False), seed=1)


def test_retraining_a_left_out_network_says_so(data, tmp_path, capsys):
    cfg = pc.TrainConfig(epochs=1, lr=0.02, batch_size=32, progress=False)
    pb.load_or_train(tmp_path / "kept.pt", [4] * 5, data, cfg)
    assert "left out" not in capsys.readouterr().out
    (tmp_path / "left-out.csv").write_text("file,seconds\ngone.pt,12.5\n")
    pb.load_or_train(tmp_path / "gone.pt", [4] * 5, data, cfg)
    assert "gone.pt was left out of the published run folder" in capsys.readouterr().out
    pb.load_or_train(tmp_path / "gone.pt", [4] * 5, data, cfg)  # now on disk: loaded, nothing to say
    assert "left out" not in capsys.readouterr().out
    (tmp_path / "left-out.csv").write_text("file,seconds,commit\nheld.pt,3.0,0123456789abcdef0123\n")
    pb.load_or_train(tmp_path / "held.pt", [4] * 5, data, cfg)
    out = capsys.readouterr().out
    assert "the original is in commit 0123456789ab" in out and "within seed noise, not exactly" in out


def test_augmented_kd_runs_the_teacher_live_and_plants(data, teacher, monkeypatch):
    calls = {"n": 0}
    real = pc.train.teacher_logits

    def counting(*a, **k):
        calls["n"] += 1
        return real(*a, **k)
    monkeypatch.setattr(pc.train, "teacher_logits", counting)
    torch.manual_seed(0)
    net = pc.PlainCNN([8] * 5, **data.model_kwargs())
    cfg = pc.TrainConfig(epochs=4, lr=0.02, batch_size=32, loss="kd", T=4.0, augment=True, flip=False, crop_pad=1,
                         progress=False)  # flips would turn the synthetic class patterns into other patterns
    hist = pc.fit(net, data, cfg, teacher=teacher)
    assert calls["n"] == 0  # no cache: every augmented batch goes through the live teacher
    assert hist[-1]["val_acc"] > 0.3
    planted = pc.plant(net, 1, 2)
    before = planted.convs[1].new_weight.detach().clone()
    pc.fit(planted, data, cfg, teacher=teacher)  # frozen part recomputed per batch (augmented views)
    assert not torch.equal(before, planted.convs[1].new_weight)
