import pytest
import torch

import planting_core as pc


@pytest.fixture
def net():
    torch.manual_seed(0)
    return pc.PlainCNN([6, 7, 8, 9, 10], in_channels=1, image_size=16, num_classes=5)


X = torch.randn(8, 1, 16, 16, generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("layer", range(5))
def test_zero_init_planting_preserves_outputs(net, layer):
    planted = pc.plant(net, layer, 3, init="zero")
    assert torch.equal(planted(X), net(X))
    assert planted.widths[layer] == net.widths[layer] + 3
    assert net.widths == [6, 7, 8, 9, 10]  # the input network is unchanged
    assert pc.count_parameters(planted) == pc.param_count(planted.widths, in_channels=1, num_classes=5, image_size=16)


@pytest.mark.parametrize("layer", range(5))
def test_only_new_weights_are_trainable(net, layer):
    planted = pc.plant(net, layer, 2)
    names = sorted(n for n, _ in planted.named_parameters())
    nxt = f"convs.{layer + 1}" if layer < 4 else "fc1"
    assert names == sorted([f"convs.{layer}.new_weight", f"convs.{layer}.new_bias", f"{nxt}.new_weight"])
    assert planted.convs[layer].new_weight.shape[0] == 2
    assert planted.convs[layer].new_weight.shape[1] == ([1] + net.widths)[layer]


def test_random_init_changes_outputs(net):
    assert not torch.allclose(pc.plant(net, 2, 3, init="random")(X), net(X))


@pytest.mark.parametrize("layer", range(5))
def test_old_weights_bit_identical_after_sgd_with_momentum_and_weight_decay(net, layer):
    planted = pc.plant(net, layer, 3)
    before_old = {k: v.clone() for k, v in planted.state_dict().items() if "new_" not in k}
    before_new = {k: v.clone() for k, v in planted.named_parameters()}
    opt = torch.optim.SGD(planted.parameters(), lr=0.1, momentum=0.9, weight_decay=0.05)
    y = torch.randint(0, 5, (8,))
    for _ in range(5):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(planted(X), y).backward()
        opt.step()
    after = planted.state_dict()
    for k, v in before_old.items():
        assert torch.equal(after[k], v), k
    for k, v in before_new.items():
        assert not torch.equal(after[k], v), f"{k} did not train"
    # the merged network's old slice equals the original network's weights
    merged = pc.merge(planted)
    old = net.convs[layer].weight
    assert torch.equal(merged.convs[layer].weight[: old.shape[0]], old)


@pytest.mark.parametrize("layer", range(5))
def test_merge_is_exact_and_plain(net, layer):
    planted = pc.plant(net, layer, 4, init="random")
    merged = pc.merge(planted)
    assert type(merged) is pc.PlainCNN and not pc.is_planted(merged)
    assert merged.widths == planted.widths
    assert torch.allclose(merged(X), planted(X), rtol=1e-5, atol=1e-6)  # same function; float rounding only
    assert pc.count_parameters(merged) == pc.count_parameters(planted)
    assert all(p.requires_grad for p in merged.parameters())


def test_plant_again_after_merge_and_on_a_planted_net(net):
    once = pc.plant(net, 1, 2, init="random")
    twice = pc.plant(pc.merge(once), 3, 2)
    assert twice.widths == [6, 9, 8, 11, 10]
    assert torch.allclose(twice(X), once(X), atol=1e-6)
    again = pc.plant(once, 1, 2)  # a planted net is merged first: round 1's channels become frozen
    assert again.widths == [6, 11, 8, 9, 10]
    assert torch.allclose(again(X), once(X), atol=1e-6)
    assert len(list(again.parameters())) == 3


@pytest.mark.parametrize("layer,channels,init,match", [
    (5, 2, "zero", "layer must be an integer from 0 to 4"),
    (-1, 2, "zero", "layer must be an integer from 0 to 4"),
    (1, 0, "zero", "channels must be a positive integer"),
    (1, -3, "zero", "channels must be a positive integer"),
    (1, 2, "ones", "init must be one of"),
])
def test_bad_plant_arguments(net, layer, channels, init, match):
    with pytest.raises(pc.PlantingError, match=match):
        pc.plant(net, layer, channels, init)


@pytest.mark.parametrize("layout,size", [("cifar", 16), ("stl", 32)])
@pytest.mark.parametrize("layer", range(5))
def test_fast_planted_forward_matches_the_full_forward_and_its_gradients(layout, size, layer):
    torch.manual_seed(0)
    net = pc.PlainCNN([6, 7, 8, 9, 10], layout=layout, in_channels=1, image_size=size, num_classes=5)
    planted = pc.plant(net, layer, 3, init="random")
    x, y = torch.randn(4, 1, size, size), torch.randint(0, 5, (4,))
    full = planted(x)
    fast = planted.forward_from_prefix(*planted.frozen_prefix(x))
    assert torch.allclose(fast, full, atol=1e-5)
    grads = []
    for out in (full, fast):
        grads.append(torch.autograd.grad(torch.nn.functional.cross_entropy(out, y), list(planted.parameters()),
                                         retain_graph=True))
    for a, b in zip(*grads):
        assert torch.allclose(a, b, atol=1e-5)


@pytest.mark.parametrize("layer", [2, 4])
def test_train_head_trains_fc1_and_fc2_and_keeps_old_conv_weights(net, layer):
    planted = pc.planting.train_head(pc.plant(net, layer, 3))
    nxt = f"convs.{layer + 1}" if layer < 4 else "fc1"
    fc1 = ["fc1.old_weight", "fc1.old_bias"] if layer == 4 else ["fc1.weight", "fc1.bias"]
    names = sorted(n for n, _ in planted.named_parameters())
    assert names == sorted([f"convs.{layer}.new_weight", f"convs.{layer}.new_bias", f"{nxt}.new_weight",
                            *fc1, "fc2.weight", "fc2.bias"])
    assert torch.equal(planted(X), net(X))  # still function-preserving at zero init
    convs_before = [c.weight.detach().clone() for c in net.convs]
    opt = torch.optim.SGD(planted.parameters(), lr=0.1, momentum=0.9, weight_decay=0.05)
    y = torch.randint(0, 5, (8,), generator=torch.Generator().manual_seed(2))
    for _ in range(3):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(planted(X), y).backward()
        opt.step()
    merged = pc.merge(planted)
    for i, old in enumerate(convs_before):  # every conv's old filters bit-identical; the head moved
        assert torch.equal(merged.convs[i].weight[: old.shape[0], : ([1] + net.widths)[i]], old)
    assert not torch.equal(merged.fc2.weight, net.fc2.weight)
    assert not torch.equal(merged.fc1.weight[:, : net.fc1.weight.shape[1]], net.fc1.weight)


@pytest.mark.parametrize("layer", [3, 4])
def test_train_head_prefix_leaves_out_what_trains(net, layer):
    """With the head training, the cached prefix must not hold fc1's old weights: the fast path equals the full
    forward pass after the head has changed (a stale cache would not)."""
    planted = pc.planting.train_head(pc.plant(net, layer, 3, init="random"))
    prefix = planted.frozen_prefix(X)  # cached before the head changes, as fit() caches it once
    with torch.no_grad():
        planted.fc1.weight.mul_(1.5) if layer < 4 else planted.fc1.old_weight.mul_(1.5)
        planted.fc2.bias.add_(0.3)
    assert torch.allclose(planted.forward_from_prefix(*prefix), planted(X), atol=1e-5)


def test_train_head_with_finetune_old_is_refused():
    with pytest.raises(pc.PlantingError, match="finetune_old=True already trains every weight"):
        pc.GrowConfig(finetune_old=True, finetune_head=True).check()
