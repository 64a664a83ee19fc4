"""Hierarchical group-sparse pruning: the pruned network computes what the masked one did, the penalty's groups,
and removal by loss rise down to a parameter budget."""
from __future__ import annotations

import pytest
import torch

import planting_core as pc
from planting_core import book as pb
from planting_core.book.pruning import (channel_norms, group_sparse_penalty, next_columns, prune, prune_to_budget,
                                   removal_scores, sparse_penalty)


def random_net(data: pc.Data, widths=(6, 5, 7, 4, 6), seed: int = 0) -> pc.PlainCNN:
    torch.manual_seed(seed)
    net = pc.PlainCNN(list(widths), **data.model_kwargs()).eval()
    with torch.no_grad():
        for conv in net.convs:
            conv.bias.normal_(0, 0.1)  # nonzero biases: a removed channel must take its bias along
    return net


def masked(net: pc.PlainCNN, keep: list[list[int]]) -> pc.PlainCNN:
    """`net` with every channel not in `keep` zeroed: its filter and bias (so its output is 0)."""
    out = pc.PlainCNN(net.widths, **{k: v for k, v in net.arch().items() if k != "widths"}).eval()
    out.load_state_dict(net.state_dict())
    with torch.no_grad():
        for layer, idx in enumerate(keep):
            drop = sorted(set(range(net.widths[layer])) - set(idx))
            out.convs[layer].weight[drop] = 0
            out.convs[layer].bias[drop] = 0
    return out


@pytest.mark.parametrize("keep", [
    [[0, 2, 5], [1, 4], [0, 1, 2, 3, 6], [3], [0, 5]],
    [[5], [0], [6], [0, 1, 2, 3], [2, 3, 4]],
    [list(range(w)) for w in (6, 5, 7, 4, 6)],
])
def test_the_pruned_network_computes_what_the_masked_one_did(data, keep):
    net = random_net(data)
    x = data.test.x[:32]
    small = prune(net, keep)
    assert small.widths == [len(k) for k in keep]
    assert pc.count_parameters(small) == pc.param_count(small.widths, **{k: v for k, v in net.arch().items()
                                                                         if k != "widths"})
    torch.testing.assert_close(small(x), masked(net, keep)(x), rtol=1e-5, atol=1e-5)


def test_next_columns_are_the_weights_each_channel_feeds(data):
    net = random_net(data)
    cols = next_columns(net, 1)  # conv2's channels feed conv3's input columns
    assert cols.shape == (5, 7 * 9)
    torch.testing.assert_close(cols[3], net.convs[2].weight[:, 3].reshape(-1))
    fc = next_columns(net, 4)  # conv5's channels feed fc1's columns, channel-major
    assert fc.shape == (6, net.hidden * net.side ** 2)
    torch.testing.assert_close(fc[2].view(net.hidden, -1), net.fc1.weight[:, 2 * net.side ** 2:3 * net.side ** 2])


def test_penalty_is_the_sum_of_channel_and_kernel_norms(data):
    net = random_net(data)
    expected = 0.0
    for i in range(5):
        w = net.convs[i].weight
        tied = w.pow(2).sum((1, 2, 3)) + net.convs[i].bias.pow(2) + next_columns(net, i).pow(2).sum(1)
        expected += tied.sqrt().sum().item() + w.pow(2).sum((2, 3)).sqrt().sum().item()
    assert group_sparse_penalty(net, 0.5).item() == pytest.approx(0.5 * expected, rel=1e-5)
    with torch.no_grad():
        for conv in net.convs:
            conv.weight.zero_()
            conv.bias.zero_()
        net.fc1.weight.zero_()
    assert group_sparse_penalty(net, 1.0).item() == pytest.approx(0.0, abs=1e-3)  # only the EPS inside the roots


def test_training_with_the_penalty_shrinks_channel_groups(data):
    cfg = pc.TrainConfig(epochs=3, lr=0.02, batch_size=32, progress=False)
    plain, sparse = random_net(data, seed=1), random_net(data, seed=1)
    pc.fit(plain, data, cfg)
    pc.fit(sparse, data, cfg, penalty=sparse_penalty(1e-2))
    shrunk = [s.sum() < p.sum() for s, p in zip(channel_norms(sparse), channel_norms(plain))]
    assert all(shrunk)


def test_a_dead_channel_scores_no_rise_and_the_lowest_rise_goes_first(data):
    net = random_net(data)
    with torch.no_grad():  # channel 3 of conv3 is dead: zeroing it changes nothing
        net.convs[2].weight[3] = 0
        net.convs[2].bias[3] = 0
    keep = [list(range(w)) for w in net.widths]
    pick = torch.randperm(len(data.train), generator=torch.Generator().manual_seed(0))[:64]  # as prune_to_budget
    scores = removal_scores(net, data.train.x[pick], data.train.y[pick], keep)
    assert len(scores) == sum(net.widths)
    dead = scores[(scores["layer"] == 2) & (scores["channel"] == 3)]["rise"].item()
    assert dead == pytest.approx(0.0, abs=1e-6)
    first = scores.sort_values("rise", kind="stable").iloc[0]  # the lowest rise goes first
    expected = list(net.widths)
    expected[int(first["layer"])] -= 1
    small, steps = prune_to_budget(net, data, pc.count_parameters(net) - 1, samples=64, fraction=0.01)
    assert small.widths == expected and len(steps) == 1


def test_prune_to_budget_meets_it_and_keeps_every_layer(data):
    net = random_net(data)
    budget = pc.param_count([2, 2, 2, 2, 2], **{k: v for k, v in net.arch().items() if k != "widths"})
    small, steps = prune_to_budget(net, data, budget, samples=64, fraction=0.1)
    assert pc.count_parameters(small) <= budget and min(small.widths) >= 1
    assert list(steps["params"]) == sorted(steps["params"], reverse=True)
    floor, _ = prune_to_budget(net, data, 1, samples=32, fraction=0.5)  # an impossible budget: one channel each
    assert floor.widths == [1, 1, 1, 1, 1]


def test_method_rows_replace_only_their_method(tmp_path):
    import pandas as pd
    path = tmp_path / "methods.csv"
    row = dict(variant="v", widths="[4]", params=1, seed=0, test_acc=0.5, test_loss=1.0)
    pb.write_method_rows(path, "a", pd.DataFrame([{**row, "method": "a"}]))
    pb.write_method_rows(path, "b", pd.DataFrame([{**row, "method": "b"}]))
    table = pb.write_method_rows(path, "a", pd.DataFrame([{**row, "method": "a", "seed": 1}] * 2))
    assert list(table.columns) == pb.METHOD_COLUMNS
    assert sorted(table["method"]) == ["a", "a", "b"] and set(table.loc[table["method"] == "a", "seed"]) == {1}


def test_load_or_prune_loads_what_it_made_and_refuses_another_budget(data, tmp_path):
    net = random_net(data)
    cfg = pc.TrainConfig(epochs=1, lr=0.01, batch_size=32, progress=False)
    budgets = [pc.count_parameters(net) // 2, pc.count_parameters(net) // 4]
    paths = {b: tmp_path / f"b{b}.pt" for b in budgets}
    first = pb.pruning.load_or_prune(paths, net, data, cfg, samples=32, fraction=0.2)
    assert all(pc.count_parameters(first[b]) <= b for b in budgets)
    again = pb.pruning.load_or_prune(paths, net, data, cfg, samples=32, fraction=0.2)
    assert all(pc.checkpoint.fingerprint(again[b]) == pc.checkpoint.fingerprint(first[b]) for b in budgets)
    with pytest.raises(pc.PlantingError, match="budget"):
        pb.pruning.load_or_prune({budgets[0] - 1: paths[budgets[0]]}, net, data, cfg, samples=32, fraction=0.2)


def test_removal_scores_equal_zeroing_each_filter_in_the_whole_network(data):
    net = random_net(data)
    keep = [list(range(w)) for w in net.widths]
    keep[1].remove(0)  # a removed channel stays zeroed while the others are scored
    x, y = data.train.x[:48], data.train.y[:48]
    scores = removal_scores(net, x, y, keep).set_index(["layer", "channel"])["rise"]

    def loss(zeroed: list[tuple[int, int]]) -> float:
        copy = pc.PlainCNN(**net.arch())
        copy.load_state_dict(net.state_dict())
        with torch.no_grad():
            for layer, channel in zeroed:
                copy.convs[layer].weight[channel] = 0
                copy.convs[layer].bias[channel] = 0
        return torch.nn.functional.cross_entropy(copy(x), y).item()

    base = loss([(1, 0)])
    for layer, channel in [(0, 2), (1, 3), (4, 1)]:
        assert scores[layer, channel] == pytest.approx(loss([(1, 0), (layer, channel)]) - base, abs=1e-5)


def test_one_pruning_path_gives_what_each_budget_alone_gives(data):
    net = random_net(data)
    total = pc.count_parameters(net)
    floor = pc.param_count([1] * 5, **{k: v for k, v in net.arch().items() if k != "widths"})
    budgets = [floor + (total - floor) * f // 10 for f in (8, 5, 2)]
    kept, steps = pb.pruning.prune_to_budgets(net, data, budgets, samples=32, fraction=0.1)
    for b in budgets:
        alone, _ = prune_to_budget(net, data, b, samples=32, fraction=0.1)
        assert alone.widths == [len(k) for k in kept[b]]
        assert pc.count_parameters(alone) <= b
    assert list(steps["params"]) == sorted(steps["params"], reverse=True)
