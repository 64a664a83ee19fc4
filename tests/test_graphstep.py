"""The static (CUDA graph) training step: torch.optim.SGD's update, and fit's results with it equal the eager
path's, for plain, distilled, planted (cached prefix) and penalised training, and across a resume."""
import copy
from dataclasses import replace

import pytest
import torch

import planting_core as pc
from planting_core import book as pb
from conftest import make_data, small_cfg
from planting_core.speed.graphstep import MIN_GRAPH_STEPS, sgd_update, use_graph
from planting_core.book.pruning import sparse_penalty
from planting_core.records import settings_record


@pytest.mark.parametrize("tensor_lr", [False, True])
def test_sgd_update_is_torchs_sgd(tensor_lr):
    torch.manual_seed(0)
    ours = [torch.randn(5, 3), torch.randn(7)]
    theirs = [p.clone().requires_grad_() for p in ours]
    opt = torch.optim.SGD(theirs, lr=0.1, momentum=0.9, weight_decay=5e-4)
    momenta = [torch.zeros_like(p) for p in ours]  # zero buffers: torch's first step (buffer = gradient)
    for step in range(4):
        grads = [torch.randn_like(p) for p in ours]
        lr = 0.1 * (step + 1) / 4
        for group in opt.param_groups:
            group["lr"] = lr
        for p, g in zip(theirs, grads):
            p.grad = g.clone()
        opt.step()
        sgd_update(ours, grads, momenta, torch.tensor(lr) if tensor_lr else lr, 0.9, 5e-4)
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a, b.detach(), atol=1e-6, rtol=1e-5)


def test_a_mask_keeps_weights_out_of_the_update():
    p, grad, buf = torch.ones(4), torch.ones(4), torch.zeros(4)
    sgd_update([p], [grad], [buf], 0.5, 0.9, 0.0, masks=[torch.tensor([1.0, 0.0, 1.0, 0.0])])
    assert p.tolist() == [0.5, 1.0, 0.5, 1.0]


def test_auto_captures_only_long_fits_on_cuda():
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert not use_graph("auto", cpu, 10 ** 6) and use_graph("on", cpu, 1) and not use_graph("off", cuda, 10 ** 6)
    assert use_graph("auto", cuda, MIN_GRAPH_STEPS) and not use_graph("auto", cuda, MIN_GRAPH_STEPS - 1)


def fit_both(make, data, cfg, **kw):
    """The same network trained with the eager and the static step: (eager net, static net, histories)."""
    nets, hists = [], []
    for mode in ("off", "on"):
        torch.manual_seed(3)
        net = make()
        hists.append(pc.fit(net, data, pc.TrainConfig(**{**cfg.__dict__, "cuda_graph": mode}), **kw))
        nets.append(net)
    return nets, hists


def assert_same(a, b, atol=1e-5):
    for (name, pa), pb_ in zip(a.state_dict().items(), b.state_dict().values()):
        torch.testing.assert_close(pa, pb_, atol=atol, rtol=1e-4, msg=name)


def test_static_steps_train_as_eager_steps_do_with_a_short_last_batch(data):
    cfg = pc.TrainConfig(epochs=2, lr=0.05, batch_size=48, progress=False)  # 256 images: 5 full batches and 16
    (eager, static), hists = fit_both(lambda: pc.PlainCNN([6] * 5, **data.model_kwargs()), data, cfg)
    assert_same(eager, static)
    assert hists[0][-1]["train_loss"] == pytest.approx(hists[1][-1]["train_loss"], abs=1e-5)


def test_static_steps_distil_into_a_planted_network_with_its_cached_prefix(data, initial, teacher):
    cfg = pc.TrainConfig(epochs=2, lr=0.05, batch_size=32, loss="kd", T=2.0, progress=False)
    (eager, static), _ = fit_both(lambda: pc.plant(initial, 2, 2, generator=torch.Generator().manual_seed(5)),
                                  data, cfg, teacher=teacher)
    assert_same(eager, static)
    assert torch.equal(eager.convs[2].old_weight, initial.convs[2].weight)  # the old weights stay frozen
    assert torch.equal(static.convs[2].old_weight, initial.convs[2].weight)


def test_static_steps_add_the_penalty(data):
    cfg = pc.TrainConfig(epochs=1, lr=0.05, batch_size=32, progress=False)
    (eager, static), _ = fit_both(lambda: pc.PlainCNN([6] * 5, **data.model_kwargs()), data, cfg,
                                  penalty=sparse_penalty(1e-3))
    assert_same(eager, static)


def trained_and_fresh(cfg: pc.TrainConfig, data: pc.Data):
    """A [6]*5 network trained straight through with eager steps, and an untrained copy of its start."""
    torch.manual_seed(0)
    straight = pc.PlainCNN([6] * 5, **data.model_kwargs())
    fresh = copy.deepcopy(straight)
    pc.fit(straight, data, cfg)
    return straight, fresh


def test_a_static_run_resumes_as_an_eager_one(tmp_path):
    data = make_data(n_train=200)
    cfg = pc.TrainConfig(epochs=2, lr=0.05, batch_size=32, progress=False)
    straight, resumed = trained_and_fresh(cfg, data)
    state = tmp_path / "state.pt"
    pc.fit(resumed, data, pc.TrainConfig(**{**cfg.__dict__, "epochs": 2, "cuda_graph": "on"}), checkpoint=state)
    # the state after epoch 2 was saved by a static run; a fresh eager fit of the same settings loads it whole
    again = pc.PlainCNN([6] * 5, **data.model_kwargs())
    pc.fit(again, data, cfg, checkpoint=state)  # nothing left to train: it only loads
    assert_same(straight, resumed)
    assert_same(resumed, again, atol=0)


def test_an_eager_state_resumes_with_static_steps(tmp_path):
    data = make_data(n_train=200)
    cfg = pc.TrainConfig(epochs=3, lr=0.05, batch_size=32, progress=False)
    straight, half = trained_and_fresh(cfg, data)
    state = tmp_path / "state.pt"

    class Stop(Exception):
        pass

    def stop_after_first_epoch(net):  # the penalty hook runs every step: interrupt in epoch 2, like a kill
        stop_after_first_epoch.steps += 1
        if stop_after_first_epoch.steps > 7:  # 200 images at 32: 7 steps an epoch
            raise Stop
        return torch.zeros(())
    stop_after_first_epoch.steps = 0
    with pytest.raises(Stop):
        pc.fit(half, data, cfg, checkpoint=state, penalty=stop_after_first_epoch)
    pc.fit(half, data, pc.TrainConfig(**{**cfg.__dict__, "cuda_graph": "on"}), checkpoint=state)  # momenta resumed
    assert_same(straight, half)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_graph_replays_train_as_eager_steps_do():
    cpu = make_data(n_train=128 * MIN_GRAPH_STEPS // 4)  # 4 epochs: MIN_GRAPH_STEPS full batches, captured
    data = pc.Data(**{**cpu.__dict__, **{s: pc.Split(getattr(cpu, s).x.cuda(), getattr(cpu, s).y.cuda())
                                         for s in ("train", "val", "test")}})
    cfg = pc.TrainConfig(epochs=4, lr=0.02, batch_size=128, progress=False)
    (eager, graphed), hists = fit_both(lambda: pc.PlainCNN([8] * 5, **data.model_kwargs()), data, cfg)
    assert_same(eager, graphed, atol=2e-2)  # bf16 autocast on both paths; replays differ only in rounding
    assert hists[1][-1]["val_acc"] == pytest.approx(hists[0][-1]["val_acc"], abs=0.05)


def test_cuda_graph_is_not_a_recorded_setting(initial, data, teacher, tmp_path):
    """A planting run started with one cuda_graph mode resumes under another (and under states saved before the
    switch existed): the mode changes how fast it trains, not what."""
    def cfg(mode, rounds):
        base = small_cfg(max_rounds=rounds, stop="fixed-rounds")
        return replace(base, train=replace(base.train, cuda_graph=mode))
    assert "cuda_graph" not in settings_record(cfg("on", 1))["train"]
    pb.plant_and_save(initial, teacher, data, cfg("on", 1), tmp_path, progress=False)
    again = pb.plant_and_save(initial, teacher, data, cfg("off", 2), tmp_path, progress=False)
    assert again.history["round"].max() == 2
    assert "cuda_graph" not in pc.load_checkpoint(tmp_path / "planted.pt").meta["settings"]["train"]


def test_a_graph_step_that_fails_on_its_device_falls_back_to_eager_with_one_warning(data, monkeypatch):
    """The CUDA-only failure forced on the CPU: the graph step raises on the first call (as a capture that the
    device refuses); fit warns once and ends with the weights of the static steps run eagerly."""
    from planting_core.speed import graphstep
    cfg = pc.TrainConfig(epochs=2, lr=0.05, batch_size=48, progress=False, cuda_graph="on")
    torch.manual_seed(0)
    reference = pc.PlainCNN([6] * 5, **data.model_kwargs())
    forced = copy.deepcopy(reference)
    pc.fit(reference, data, cfg)
    calls = []

    def refuse(self, *args):
        calls.append(1)
        raise RuntimeError("CUDA error: operation not permitted when stream is capturing")
    real_init = graphstep.StaticStep.__init__
    monkeypatch.setattr(graphstep.StaticStep, "__init__",
                        lambda self, *a, **k: real_init(self, *a, **{**k, "capture": True}))
    monkeypatch.setattr(graphstep.StaticStep, "graph_step", refuse)
    with pytest.warns(UserWarning, match="CUDA graph step failed .*eager steps") as caught:
        pc.fit(forced, data, cfg)
    assert len(calls) == 1 and len([w for w in caught if "CUDA graph" in str(w.message)]) == 1
    assert_same(reference, forced, atol=0)
