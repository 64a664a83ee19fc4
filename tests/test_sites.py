"""Planting into any network: sites found by tracing, exact planting, merge and checkpoints, grow over any model."""
from __future__ import annotations

import copy

import pytest
import torch
import torchvision
from hypothesis import HealthCheck, given, settings, strategies as st
from torch import nn

import planting_core as pc
from planting_core.search import candidate_seed
from planting_core.proposals import PROPOSALS, Candidate
from planting_core.sites import Site, find_sites, survey
from conftest import small_cfg
from nets import SmallResNet, VGGBN


@st.composite
def stacks(draw) -> tuple[nn.Module, int]:
    """A random conv/linear stack (kernels 1-5, strides 1-2, padding 0-2, dilation 1-2, bias and BatchNorm on or
    off, pooling, activations) on 1x12x12 images, and its input side."""
    side, c, layers = 12, 1, []
    for _ in range(draw(st.integers(1, 3))):
        k, s, p, d = draw(st.integers(1, 5)), draw(st.integers(1, 2)), draw(st.integers(0, 2)), draw(st.integers(1, 2))
        out = (side + 2 * p - d * (k - 1) - 1) // s + 1
        if out < 2:
            break
        w = draw(st.integers(2, 5))
        layers.append(nn.Conv2d(c, w, k, s, p, d, bias=draw(st.booleans())))
        if draw(st.booleans()):
            layers.append(nn.BatchNorm2d(w))
        layers.append(draw(st.sampled_from([nn.ReLU, nn.Tanh, nn.GELU]))())
        side, c = out, w
        if side >= 4 and draw(st.booleans()):
            layers.append(draw(st.sampled_from([nn.MaxPool2d, nn.AvgPool2d]))(2))
            side //= 2
    layers.append(nn.Flatten())
    hidden = draw(st.integers(2, 6))
    layers.append(nn.Linear(c * side * side, hidden, bias=draw(st.booleans())))
    if draw(st.booleans()):
        layers.append(nn.BatchNorm1d(hidden))
    layers += [nn.ReLU(), nn.Linear(hidden, 3)]
    return nn.Sequential(*layers), 12


def settle(net: nn.Module, x: torch.Tensor) -> nn.Module:
    """Give every BatchNorm non-trivial statistics and affine parameters, then evaluation mode."""
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
    return net.eval()


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(stack=stacks(), channels=st.integers(1, 3), seed=st.integers(0, 1000))
def test_planting_any_site_of_a_random_stack_is_exact(stack, channels, seed, tmp_path_factory):
    model, side = stack
    torch.manual_seed(seed)
    model = settle(model.double(), None)
    x = torch.randn(4, 1, side, side, dtype=torch.float64)
    sites = find_sites(model, x)
    assert sites, survey(model, x).refused
    for site in sites:
        planted = pc.plant(model, site, channels, generator=torch.Generator().manual_seed(seed))
        planted.train()  # old BatchNorms keep their statistics even in training mode
        assert torch.allclose(planted(x), model(x), atol=1e-12, rtol=0)
        frozen = {k: v.clone() for k, v in planted.state_dict().items()}
        new = {n for n, p in planted.named_parameters() if p.requires_grad}
        assert new and all(".new" in n for n in new), new
        opt = torch.optim.SGD([p for p in planted.parameters() if p.requires_grad], lr=0.1)
        planted(x).square().mean().backward()
        opt.step()
        after = planted.state_dict()
        changed = {k for k in frozen if not torch.equal(frozen[k], after[k])}
        assert all(".new" in k for k in changed), changed  # only the new weights (and their BN) moved
        planted.eval()
        merged = pc.merge(planted).eval()
        assert type(merged) is type(model)
        assert torch.allclose(merged(x), planted(x), atol=1e-12, rtol=0)
        path = tmp_path_factory.mktemp("ckpt") / "grown.pt"
        pc.save_checkpoint(planted, path)
        loaded = pc.load_checkpoint(path, template=model).eval()
        assert torch.equal(loaded(x), merged(x))


def test_resnet18_plants_its_blocks_inner_widths_and_refuses_residual_producers():
    torch.manual_seed(0)
    model = settle(torchvision.models.resnet18(num_classes=10), None)  # random weights: nothing downloaded
    x = torch.randn(2, 3, 32, 32)
    found = survey(model, x)
    assert [s.producer for s in found.sites] == [f"layer{i}.{j}.conv1" for i in range(1, 5) for j in range(2)]
    assert all(s.consumer == s.producer.replace("conv1", "conv2") and s.norm == s.producer.replace("conv", "bn")
               for s in found.sites)
    for name in ["layer1.0.conv2", "layer2.0.downsample.0", "layer4.1.conv2"]:
        assert "residual sum" in found.refused[name], found.refused[name]
    assert "feeds 2 places" in found.refused["conv1"]  # the stem's output: a block and its shortcut
    with pytest.raises(pc.PlantingError, match="cannot plant at layer1.0.conv2: its output joins a residual sum"):
        found.site("layer1.0.conv2")
    for site in found.sites[::3]:
        planted = pc.plant(model, site, 4).eval()
        assert torch.allclose(planted(x), model(x), atol=1e-5)
        assert torch.allclose(pc.merge(planted).eval()(x), model(x), atol=1e-5)


def test_grouped_convs_and_untraceable_models_are_refused_in_one_line():
    net = nn.Sequential(nn.Conv2d(4, 4, 3, groups=4), nn.ReLU(), nn.Conv2d(4, 2, 1), nn.Flatten(), nn.Linear(2 * 6 * 6, 2))
    refused = survey(net, torch.randn(1, 4, 8, 8)).refused
    assert "depthwise conv" in refused["0"]

    class Branchy(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1, self.conv2 = nn.Conv2d(1, 3, 3, padding=1), nn.Conv2d(3, 2, 3, padding=1)

        def forward(self, x):
            h = torch.relu(self.conv1(x))
            if h.sum() > 0:  # data-dependent control flow: torch.fx cannot trace it
                h = h * 2
            return self.conv2(h)
    model = Branchy().eval()
    with pytest.raises(pc.PlantingError, match="cannot trace Branchy.*name its sites by hand") as err:
        find_sites(model, torch.randn(1, 1, 6, 6))
    assert "\n" not in str(err.value)
    x = torch.randn(2, 1, 6, 6)
    planted = pc.plant(model, Site("conv1", "conv2"), 2)  # named by hand: no tracing needed
    assert torch.allclose(planted(x), model(x), atol=1e-6)
    with pytest.raises(pc.PlantingError, match="consumer 'conv3' must be one of Conv2d, Linear, found no such module"):
        pc.plant(model, Site("conv1", "conv3"), 2)


def test_a_checkpoint_declaring_a_huge_width_is_refused_before_allocating(tmp_path):
    model = VGGBN()
    path = pc.save_checkpoint(pc.merge(pc.plant(model, find_sites(model, torch.randn(2, 1, 16, 16))[0], 2)),
                              tmp_path / "grown.pt")
    obj = pc.checkpoint.read_checkpoint(path)
    obj["sizes"]["features.0"] = [1, 12_000_000]
    path.write_bytes(pc.checkpoint.checkpoint_bytes({k: v for k, v in obj.items() if k not in ("format", "meta")},
                                                    obj["meta"]))
    with pytest.raises(pc.CheckpointError, match=r"features.0: recorded sizes \[1, 12000000\] are not 2 integers"):
        pc.load_checkpoint(path, template=model)
    with pytest.raises(pc.CheckpointError, match="pass template="):
        pc.load_checkpoint(path)


def grow_model(make: type[nn.Module], data, teacher, **kw):
    torch.manual_seed(3)
    net = make()
    pc.fit(net, data, pc.TrainConfig(epochs=1, lr=0.02, batch_size=32, progress=False))
    return pc.grow(net, teacher, data, small_cfg(**kw), progress=False)


def two_sizes(sites, rnd, channels):
    """A proposal with two candidate sizes at every site."""
    return [Candidate(i, c, s) for i, s in enumerate(sites) for c in (channels, 2 * channels)]


@pytest.mark.parametrize("make", [VGGBN, SmallResNet])
def test_grow_on_networks_of_ones_own_chooses_the_same_with_fused_on_and_off(make, data, teacher, monkeypatch):
    monkeypatch.setitem(PROPOSALS, "two-sizes", two_sizes)
    for propose in ("all-layers", "two-sizes"):
        off = grow_model(make, data, teacher, max_rounds=2, fused="off", propose=propose)
        with pytest.warns(UserWarning, match="train one at a time"):
            on = grow_model(make, data, teacher, max_rounds=2, fused="on", propose=propose)
        assert type(off.model) is make
        cols = ["round", "layer", "widths", "params", "chosen"]
        assert off.history[cols].equals(on.history[cols])
        assert off.history["val_loss"].tolist() == pytest.approx(on.history["val_loss"].tolist(), abs=1e-6)
        last = off.chosen().iloc[-1]
        assert pc.count_parameters(off.model) == last["params"]
        assert pc.evaluate(off.model, data.val)["loss"] == pytest.approx(last["val_loss"], rel=1e-5)
    assert len(off.history[off.history["round"] == 1]) == 2 * len(find_sites(off.model, data.val.x[:2]))


def test_two_sizes_on_one_layer_of_the_paper_network_fall_back_from_fused_and_get_their_own_seeds(
        data, teacher, initial, monkeypatch):
    monkeypatch.setitem(PROPOSALS, "two-sizes", two_sizes)
    off = pc.grow(initial, teacher, data, small_cfg(max_rounds=1, fused="off", propose="two-sizes"), progress=False)
    with pytest.warns(UserWarning, match="same number of new channels"):
        on = pc.grow(initial, teacher, data, small_cfg(max_rounds=1, fused="on", propose="two-sizes"), progress=False)
    assert off.history.drop(columns="seconds").equals(on.history.drop(columns="seconds"))
    cands = two_sizes(pc.search.growth_sites(initial, data.val.x[:2]), 1, 2)
    seeds = [candidate_seed(0, 1, c, 2) for c in cands]
    assert len(set(seeds)) == len(seeds) == 10
    assert seeds[::2] == [0 * 1_000_003 + 101 + layer for layer in range(5)]  # the paper's candidates: seeds as before


def test_grown_networks_resume_from_their_state(data, teacher, tmp_path):
    torch.manual_seed(3)
    net = SmallResNet()
    whole = pc.grow(copy.deepcopy(net), teacher, data, small_cfg(max_rounds=2), out_dir=tmp_path / "a", progress=False)
    pc.grow(copy.deepcopy(net), teacher, data, small_cfg(max_rounds=1), out_dir=tmp_path / "b", progress=False)
    resumed = pc.grow(copy.deepcopy(net), teacher, data, small_cfg(max_rounds=2), out_dir=tmp_path / "b",
                      progress=False)
    assert whole.history.drop(columns="seconds").equals(resumed.history.drop(columns="seconds"))
    assert type(resumed.model) is SmallResNet


def test_a_network_that_views_channels_last_images_is_told_how_to_fix_it(data):
    class Viewing(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.fc = nn.Conv2d(1, 4, 3, padding=1), nn.Linear(4 * 16 * 16, 4)

        def forward(self, x):
            return self.fc(torch.relu(self.conv(x)).view(x.size(0), -1))
    with pytest.raises(pc.PlantingError, match=r"Viewing cannot take .*use .reshape\(\) or torch.flatten") as err:
        pc.fit(Viewing(), data, pc.TrainConfig(epochs=1, batch_size=32, progress=False))
    assert "\n" not in str(err.value)


def test_the_readmes_own_network_example_runs(monkeypatch, capsys):
    import re
    from pathlib import Path
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    section = readme.split("## Plant into your own network", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    assert len([line for line in code.splitlines() if line.strip()]) <= 12
    small = code.replace("subset=5000", "subset=300").replace("epochs=15", "epochs=1").replace("max_rounds=5", "max_rounds=1")
    assert small != code
    exec(compile(small, "README.md", "exec"), {})
    out = capsys.readouterr().out
    assert "Site(producer='0', consumer='4', norm='1', area=1)" in out and "round" in out


def test_a_failing_fused_step_falls_back_to_one_at_a_time_with_one_warning(data, teacher, initial, monkeypatch):
    off = pc.grow(initial, teacher, data, small_cfg(max_rounds=1, fused="off"), progress=False)

    def broken(*args, **kwargs):
        raise RuntimeError("CUDA error: an illegal memory access was encountered\nmore detail")
    monkeypatch.setattr(pc.search, "fit_fused", broken)
    with pytest.warns(UserWarning, match=r"fused candidates failed on cpu \(CUDA error: an illegal memory access") as w:
        on = pc.grow(initial, teacher, data, small_cfg(max_rounds=1, fused="on"), progress=False)
    assert len([x for x in w if "fused" in str(x.message)]) == 1  # one round: one warning
    assert off.history.drop(columns="seconds").equals(on.history.drop(columns="seconds"))


def test_a_failing_graph_capture_falls_back_to_eager_steps_with_one_warning(data):
    from planting_core.speed.graphstep import StaticStep, optimizer_momenta
    runs = {}
    for capture in (False, True):  # on a CPU the capture fails at once (no CUDA stream): eager steps instead
        torch.manual_seed(0)
        net = pc.PlainCNN([4] * 5, **data.model_kwargs())
        params = list(net.parameters())
        opt = torch.optim.SGD(params, lr=0.1, momentum=0.9)
        step = StaticStep(lambda inputs, y, t: (nn.functional.cross_entropy(net(inputs[0]), y),) * 2, params,
                          optimizer_momenta(opt), 0.9, 0.0, capture=capture)
        with __import__("warnings").catch_warnings(record=True) as caught:
            __import__("warnings").simplefilter("always")
            for i in range(0, 96, 32):
                step((data.train.x[i:i + 32],), data.train.y[i:i + 32], None, 0.1)
        runs[capture] = ([p.detach().clone() for p in params], [str(c.message) for c in caught])
    assert runs[False][1] == [] and len(runs[True][1]) == 1 and "training goes on with eager steps" in runs[True][1][0]
    assert all(torch.equal(a, b) for a, b in zip(runs[False][0], runs[True][0]))


def test_a_collapsed_network_is_named_in_one_warning_line(data):
    net = pc.PlainCNN([4] * 5, **data.model_kwargs())
    with torch.no_grad():
        for p in net.parameters():
            p.zero_()  # every ReLU dead: the network predicts one class
    with pytest.warns(UserWarning, match=r"collapse: .*no better than always guessing one class.*lower the learning"):
        pc.fit(net, data, pc.TrainConfig(epochs=1, batch_size=32, progress=False), desc="collapse")
    with pytest.warns(UserWarning, match=r"the initial network: .*collapsed; planting .* cannot revive it"):
        pc.grow(net, net, data, small_cfg(max_rounds=1), progress=False)


@pytest.mark.parametrize("make", [VGGBN, SmallResNet])
def test_the_frozen_prefix_of_any_planted_network_is_cached_and_changes_nothing(make, data, teacher):
    from planting_core.prefix import site_prefix
    torch.manual_seed(3)
    net = make()
    x = data.val.x[:8]
    for site in find_sites(net, x):
        planted = pc.plant(net, site, 2).eval()
        frozen = site_prefix(planted)
        assert frozen is not None
        values = frozen.frozen_prefix(x)
        assert torch.allclose(frozen.forward_from_prefix(*values), planted(x), atol=1e-6)
    if make is SmallResNet:  # a block's input feeds its conv1 and its residual sum: one cached tensor serves both
        assert len(site_prefix(pc.plant(net, find_sites(net, x)[0], 2)).frozen_prefix(x)) == 1
    cached = grow_model(make, data, teacher, max_rounds=2)
    from planting_core import train
    with pytest.MonkeyPatch.context() as mp:  # no split: every candidate runs its whole network each batch
        mp.setattr(train, "site_prefix", lambda model: None)
        uncached = grow_model(make, data, teacher, max_rounds=2)
    cols = ["round", "layer", "widths", "params", "chosen"]
    assert cached.history[cols].equals(uncached.history[cols])
    assert cached.history["val_loss"].tolist() == pytest.approx(uncached.history["val_loss"].tolist(), abs=1e-5)
