"""DDNN-EKD: every sub-network shares the full network's weights, the full depth is the plain CNN itself, and the
embedded loss distils the full network's posteriors into the shallower ones."""
from __future__ import annotations

import copy

import pytest
import torch

import planting_core as pc
from planting_core import book as pb
from planting_core.book.depthnet import DepthNet, EmbeddedLoss, attention_map


def make(data, widths=(4, 6, 5, 3, 7), **kw) -> DepthNet:
    torch.manual_seed(0)
    return DepthNet(list(widths), **data.model_kwargs(), **kw)


def test_every_subnetwork_shares_the_full_networks_weights(data):
    net = make(data)
    for k in (3, 4, 5):
        sub = net.subnetwork(k)
        full_ids = {id(p) for p in net.parameters()}
        assert all(id(p) in full_ids for p in sub.parameters())  # nothing of its own: shared, not copied
        for i in range(k):
            assert sub.convs[i].weight is net.full.convs[i].weight
        with torch.no_grad():
            net.full.convs[0].weight.add_(0.1)  # a change to the full network is a change to every sub-network
        x = data.val.x[:4]
        assert torch.equal(sub(x), net.sub_logits(k, net.blocks(x)))


def test_the_full_depth_is_the_plain_cnn_and_sizes_add_up(data):
    net = make(data).eval()
    x = data.val.x[:8]
    with torch.no_grad():
        torch.testing.assert_close(net.subnetwork(5)(x), net.full(x))
        torch.testing.assert_close(net(x), net.full(x))
    assert pc.count_parameters(net.subnetwork(5)) == pc.count_parameters(net.full)
    three = net.subnetwork(3)
    conv = sum(pc.count_parameters(c) for c in net.full.convs[:3])
    assert pc.count_parameters(three) == conv + pc.count_parameters(net.heads["3"])


def test_a_shallower_subnetwork_is_a_smaller_one(data):
    net = make(data, widths=(8, 8, 8, 8, 8))  # equal widths: only the depth and the head's input differ
    sizes = [pc.count_parameters(net.subnetwork(k)) for k in (3, 4, 5)]
    assert sizes[0] < sizes[1] < sizes[2]  # each head reads block k pooled to the full network's final side
    x = data.val.x[:2]
    assert net.heads["3"][0](net.blocks(x)[2]).shape[-1] == net.full.side


def test_embedded_loss_is_zero_when_subnetworks_agree_with_the_full_one(data):
    net = make(data, depths=(5,))
    net(data.val.x[:8])
    assert net.embedded.item() == 0.0  # no shallower sub-network: nothing to distil
    net = make(data, attention_weight=0.0)
    net(data.val.x[:8])
    assert net.embedded.item() > 0
    f = torch.rand(2, 3, 4, 4)
    assert torch.allclose(attention_map(f).norm(dim=1), torch.ones(2))


def test_training_distils_into_the_subnetworks(data):
    net = make(data, widths=[8] * 5)
    x, y = data.val.x, data.val.y
    untrained_heads = copy.deepcopy(net.heads.state_dict())
    pc.fit(net, data, pc.TrainConfig(epochs=6, lr=0.02, batch_size=32, progress=False), penalty=EmbeddedLoss())
    with torch.no_grad():
        net(x)
        trained, trained_heads = net.embedded.item(), copy.deepcopy(net.heads.state_dict())
        net.heads.load_state_dict(untrained_heads)  # the same trained blocks and full network, heads as at the start
        net(x)
        # the full network sharpens while it trains, so the loss is compared at the same full network: the heads it
        # trained agree with it better than the heads it started from
        untrained = net.embedded.item()
    assert trained < untrained
    net.heads.load_state_dict(trained_heads)
    for k in (3, 4):
        acc = (net.subnetwork(k).eval()(x).argmax(1) == y).float().mean().item()
        assert acc > 1 / data.num_classes + 0.1, k  # learnt from the full network's posteriors alone


def test_a_depthnet_checkpoint_rebuilds_every_subnetwork(data, tmp_path):
    net = make(data, T=3.0).eval()
    cfg = pc.TrainConfig(epochs=1, lr=0.01, batch_size=32, progress=False)
    trained = pb.load_or_train(tmp_path / "d.pt", net.widths, data, cfg, start=lambda: net,
                               origin={"ddnn": net.arch()}, penalty=EmbeddedLoss())
    loaded = pc.load_checkpoint(tmp_path / "d.pt").eval()
    assert isinstance(loaded, DepthNet) and loaded.T == 3.0 and loaded.depths == (3, 4, 5)
    x = data.val.x[:8]
    with torch.no_grad():
        for k in (3, 4, 5):
            torch.testing.assert_close(loaded.subnetwork(k)(x), trained.subnetwork(k).eval()(x))
    assert loaded.meta["settings"]["penalty"] == "ddnn_embedded_kd"
