"""Fused candidates: the batched path equals training the candidates one at a time."""
import pytest
import torch

import planting_core as pc
from planting_core import book as pb
from conftest import small_cfg
from planting_core.speed.fused import fit_fused, union_parts


@pytest.mark.parametrize("layer", range(5))
def test_union_network_computes_what_the_candidate_computes(initial, data, layer):
    cand = pc.plant(initial, layer, 2, init="random", generator=torch.Generator().manual_seed(layer))
    widths, params, masks = union_parts(cand)
    assert widths == [w + 2 for w in initial.widths]
    union = pc.PlainCNN(widths, **{k: v for k, v in cand.arch().items() if k != "widths"})
    union.load_state_dict(params)
    x = data.val.x[:16]
    assert torch.allclose(union(x), cand(x), atol=1e-5)
    trainable = sum(int(m.sum()) for m in masks.values())
    assert trainable == sum(p.numel() for p in cand.parameters())  # exactly the new weights train


def test_fused_training_equals_one_at_a_time(initial, data, teacher):
    cfg = pc.TrainConfig(epochs=2, lr=0.05, batch_size=32, loss="kd", T=2.0, progress=False)
    targets = pc.teacher_logits(teacher, data.train.x)
    seeds = [11, 12, 13, 14, 15]
    alone, fused = [], []
    for layer, seed in enumerate(seeds):
        for out in (alone, fused):
            torch.manual_seed(seed)
            out.append(pc.plant(initial, layer, 2, generator=torch.Generator().manual_seed(seed)))
    for net, seed in zip(alone, seeds):
        pc.fit(net, data, pc.TrainConfig(**{**cfg.__dict__, "seed": seed}), targets=targets)
    finite = fit_fused(fused, data, [pc.TrainConfig(**{**cfg.__dict__, "seed": s}) for s in seeds], targets)
    assert finite == [True] * 5
    for a, f in zip(alone, fused):
        for (name, pa), pf in zip(a.named_parameters(), f.parameters()):
            assert torch.allclose(pa, pf, atol=1e-4), name
        assert pc.evaluate(a, data.val)["loss"] == pytest.approx(pc.evaluate(f, data.val)["loss"], abs=1e-4)


def test_a_fused_round_chooses_what_the_one_at_a_time_round_chooses(initial, data, teacher):
    runs = {mode: pc.grow(initial, teacher, data, small_cfg(max_rounds=2, fused=mode), progress=False)
            for mode in ("off", "on")}
    off, on = runs["off"].history, runs["on"].history
    assert list(off["layer"]) == list(on["layer"]) and list(off["chosen"]) == list(on["chosen"])
    assert (off["val_loss"] - on["val_loss"]).abs().max() < 1e-4
    assert runs["off"].model.widths == runs["on"].model.widths


def test_fused_is_not_a_recorded_setting(initial, data, teacher, tmp_path):
    pb.plant_and_save(initial, teacher, data, small_cfg(max_rounds=1, fused="on"), tmp_path, progress=False)
    again = pb.plant_and_save(initial, teacher, data, small_cfg(max_rounds=1, fused="off"), tmp_path, progress=False)
    assert "fused" not in pc.load_checkpoint(tmp_path / "planted.pt").meta["settings"] and len(again.history)


def on_cuda(data: pc.Data) -> pc.Data:
    return pc.Data(**{**data.__dict__, **{s: pc.Split(getattr(data, s).x.cuda(), getattr(data, s).y.cuda())
                                          for s in ("train", "val", "test")}})


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_fused_on_cuda_matches_the_cpu_choice(initial, data, teacher):
    cuda = on_cuda(data)
    on_gpu = pc.grow(initial, teacher, cuda, small_cfg(max_rounds=1), progress=False)  # auto: fused on CUDA
    on_cpu = pc.grow(initial, teacher, data, small_cfg(max_rounds=1, fused="off"), progress=False)
    assert list(on_gpu.history["chosen"]) == list(on_cpu.history["chosen"])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_fused_steps_replayed_from_a_cuda_graph_train_as_eager_ones(initial, data, teacher):
    cuda = on_cuda(data)
    targets = pc.teacher_logits(teacher, cuda.train.x)
    seeds = [11, 12, 13]
    trained = {}
    for mode in ("off", "on"):  # "on": every full batch's step replayed from the captured graph
        nets = [pc.device.to_device(pc.plant(initial, layer, 2, generator=torch.Generator().manual_seed(s)), "cuda")
                for layer, s in enumerate(seeds)]
        cfgs = [pc.TrainConfig(epochs=2, lr=0.05, batch_size=32, loss="kd", T=2.0, progress=False, seed=s,
                               cuda_graph=mode) for s in seeds]
        assert fit_fused(nets, cuda, cfgs, targets) == [True] * 3
        trained[mode] = nets
    for eager, graphed in zip(trained["off"], trained["on"]):
        for (name, pa), pb_ in zip(eager.named_parameters(), graphed.parameters()):
            torch.testing.assert_close(pa, pb_, atol=2e-2, rtol=1e-2, msg=name)  # bf16 on both: rounding only


def test_fused_candidates_that_fail_on_their_device_train_one_at_a_time_with_one_warning(initial, data, teacher,
                                                                                          monkeypatch):
    """The device-only failure forced on the CPU: fit_fused raises every round; each round warns once and
    chooses, with the same validation losses, what the one-at-a-time search chooses."""
    off = pc.grow(initial, teacher, data, small_cfg(max_rounds=2, fused="off"), progress=False).history

    def fail(*args, **kwargs):
        raise RuntimeError("CUDA error: out of memory")
    monkeypatch.setattr(pc.search, "fit_fused", fail)
    with pytest.warns(UserWarning, match="fused candidates failed .*one at a time") as caught:
        forced = pc.grow(initial, teacher, data, small_cfg(max_rounds=2, fused="on"), progress=False).history
    assert len([w for w in caught if "fused candidates failed" in str(w.message)]) == 2  # one per round
    assert list(off["layer"]) == list(forced["layer"]) and list(off["chosen"]) == list(forced["chosen"])
    assert (off["val_loss"] - forced["val_loss"]).abs().max() < 1e-6
