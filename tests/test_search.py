import pandas as pd
import pytest
import torch

import planting_core as pc
from planting_core import book as pb
from conftest import small_cfg


def test_grow_keeps_the_lowest_validation_loss_candidate(data, teacher, initial):
    result = pc.grow(initial, teacher, data, small_cfg(max_rounds=2), progress=False)
    h = result.history
    assert list(h.columns[:6]) == ["round", "layer", "widths", "params", "val_loss", "val_acc"]
    kept_loss = h.loc[h["round"] == 0, "val_loss"].item()
    for rnd in sorted(set(h["round"]) - {0}):
        cands = h[h["round"] == rnd]
        assert sorted(cands["layer"]) == [0, 1, 2, 3, 4]
        chosen = cands[cands["chosen"]]
        if len(chosen):
            assert chosen["val_loss"].item() == cands["val_loss"].min()
            assert chosen["val_loss"].item() < kept_loss
            assert chosen["test_acc"].notna().all()
            kept_loss = chosen["val_loss"].item()
    last = result.chosen().iloc[-1]
    assert str(result.model.widths) == last["widths"]
    assert pc.count_parameters(result.model) == last["params"]
    # the returned network is the kept one: its validation loss is the history's
    assert pc.evaluate(result.model, data.val)["loss"] == pytest.approx(last["val_loss"], rel=1e-5)


def test_grow_stops_when_nothing_improves(data, teacher, initial):
    result = pc.grow(initial, teacher, data, small_cfg(min_delta=100.0), progress=False)
    assert "stopped falling" in result.stop_reason
    assert result.history["chosen"].sum() == 1  # only the initial network
    assert result.model.widths == initial.widths
    assert len(result.history) == 6  # the initial row and one round of five candidates


def test_grow_respects_max_params_and_round_robin(data, teacher, initial):
    limit = pc.count_parameters(initial) + 400
    result = pc.grow(initial, teacher, data, small_cfg(max_params=limit, max_rounds=3), progress=False)
    assert pc.count_parameters(result.model) <= limit
    assert (result.history["status"] == "over max_params").any()
    rr = pc.grow(initial, teacher, data, small_cfg(propose="round-robin", stop="fixed-rounds", max_rounds=3), progress=False)
    assert list(rr.history["layer"].dropna()) == [0, 1, 2]


def test_grow_writes_history_and_resumes(data, teacher, initial, tmp_path):
    cfg = small_cfg(max_rounds=2)
    first = pc.grow(initial, teacher, data, cfg, out_dir=tmp_path, progress=False)
    on_disk = pd.read_csv(tmp_path / "history.csv")
    assert len(on_disk) == len(first.history)
    again = pc.grow(initial, teacher, data, cfg, out_dir=tmp_path, progress=False)  # finished: returned as is
    pd.testing.assert_frame_equal(again.history, first.history)
    with pytest.raises(pc.PlantingError, match="other settings"):
        pc.grow(initial, teacher, data, small_cfg(max_rounds=2, channels=3), out_dir=tmp_path, progress=False)


@pytest.mark.parametrize("kw,match", [({"channels": 0}, "'channels' must be an integer from 1"), ({"propose": "random"}, "propose. must be one of all-layers, round-robin"),
                                      ({"max_rounds": 0}, "'max_rounds' must be an integer from 1")])
def test_bad_grow_config(data, teacher, initial, kw, match):
    with pytest.raises(pc.PlantingError, match=match):
        pc.grow(initial, teacher, data, small_cfg(**kw), progress=False)


def test_a_diverging_candidate_is_reported_and_the_others_go_on(data, teacher, initial, monkeypatch):
    real_fit = pc.search.fit

    def fit(model, *a, **k):
        if getattr(model, "planted_layer", None) == 2:
            raise pc.errors.NonFiniteLossError("loss became nan")
        return real_fit(model, *a, **k)
    monkeypatch.setattr(pc.search, "fit", fit)
    result = pc.grow(initial, teacher, data, small_cfg(max_rounds=1, stop="fixed-rounds"), progress=False)
    cands = result.history[result.history["round"] == 1].set_index("layer")
    assert cands.loc[2, "status"] == "diverged" and pd.isna(cands.loc[2, "val_loss"])
    assert (cands.drop(index=2)["status"] == "ok").all() and cands["chosen"].sum() == 1
    assert not cands.loc[2, "chosen"]


def test_poster_table_means_and_stds():
    rows = pd.DataFrame([dict(model="student", widths="[8]", params=10, loss_fn="ce", seed=s, test_acc=a, test_loss=0.5)
                         for s, a in enumerate([0.80, 0.82])] +
                        [dict(model="teacher", widths="[64]", params=99, loss_fn="ce", seed=0, test_acc=0.9,
                              test_loss=0.3)])
    table = pb.poster_table(rows)
    assert list(table["model"]) == ["teacher", "student"]
    assert table.loc[1, "test acc (%)"] == "81.00 ± 1.41" and table.loc[1, "seeds"] == 2
    assert table.loc[0, "test acc (%)"] == "90.00" and table.loc[1, "loss"] == "CE"


def test_max_rounds_may_change_on_a_run_in_progress(data, teacher, initial, tmp_path):
    grow = lambda cap, out: pc.grow(initial, teacher, data, small_cfg(max_rounds=cap, stop="fixed-rounds"),  # noqa: E731
                                    out_dir=out, progress=False)
    straight = grow(3, tmp_path / "straight")
    first = grow(1, tmp_path / "run")
    assert first.stop_reason == "reached max_rounds=1"
    raised = grow(3, tmp_path / "run")  # a raised cap goes on growing from where the run stopped
    assert raised.stop_reason == "reached max_rounds=3"
    pd.testing.assert_frame_equal(raised.history.drop(columns="seconds"), straight.history.drop(columns="seconds"))
    with pytest.raises(pc.PlantingError, match="already kept 3 rounds.*allowed: max_rounds >= 3"):
        grow(2, tmp_path / "run")


def test_drop_per_parameter_selection_prefers_cheap_layers(data, teacher, initial):
    result = pc.grow(initial, teacher, data, small_cfg(max_rounds=1, select="drop_per_param", stop="fixed-rounds"),
                     progress=False)
    h = result.history
    kept0 = h[h["round"] == 0].iloc[0]
    cands = h[h["round"] == 1]
    score = (kept0["val_loss"] - cands["val_loss"]) / (cands["params"] - kept0["params"])
    assert cands.loc[score.idxmax(), "chosen"] and cands["chosen"].sum() == 1


def test_a_new_selection_policy_is_one_function(data, teacher, initial, monkeypatch):
    # the loop, training code and parameter table stay as they are: registering the policy is enough
    monkeypatch.setitem(pc.selection.SELECTIONS, "last_layer", pc.selection.Selection("val_loss", lambda rows, kept: rows[-1]))
    result = pc.grow(initial, teacher, data, small_cfg(max_rounds=2, select="last_layer", stop="fixed-rounds"),
                     progress=False)
    assert list(result.chosen()["layer"].dropna()) == [4, 4]


def test_round_robin_needs_no_min_delta_hack(data, teacher, initial):
    rr = pc.grow(initial, teacher, data, small_cfg(propose="round-robin", stop="fixed-rounds", max_rounds=6),
                 progress=False)
    assert list(rr.chosen()["layer"].dropna()) == [0, 1, 2, 3, 4, 0] and rr.stop_reason == "reached max_rounds=6"
    with pytest.raises(pc.PlantingError, match="fixed-rounds.*needs max_rounds"):
        pc.grow(initial, teacher, data, small_cfg(propose="round-robin", stop="fixed-rounds"), progress=False)


def test_saved_state_is_keyed_by_candidate(data, teacher, initial, tmp_path):
    pc.grow(initial, teacher, data, small_cfg(max_rounds=1, stop="fixed-rounds"), out_dir=tmp_path, progress=False)
    state = torch.load(tmp_path / "grow_state.pt", weights_only=True)
    assert state["round"] == 2 and state["done"] == {}
    assert set(state["identity"]) == {"initial", "teacher", "data", "images"}


def test_fit_trains_any_frozen_prefix_module_through_its_fast_path(data):
    class Probe(torch.nn.Module):  # a frozen feature extractor and a trainable linear head, not a planted net
        def __init__(self):
            super().__init__()
            self.register_buffer("proj", torch.randn(16 * 16, 8))
            self.head = torch.nn.Linear(8, 4)
            self.calls = 0

        def frozen_prefix(self, x):
            self.calls += 1
            return (torch.flatten(x, 1) @ self.proj,)

        def forward_from_prefix(self, z):
            return self.head(z)

        def forward(self, x):
            return self.head(torch.flatten(x, 1) @ self.proj)
    probe = Probe()
    assert isinstance(probe, pc.train.FrozenPrefix)
    hist = pc.fit(probe, data, pc.TrainConfig(epochs=3, lr=0.02, batch_size=32, progress=False))
    steps = -(-len(data.train) // 32) * 3
    assert probe.calls < steps  # cached once, not recomputed per batch
    assert hist[-1]["val_acc"] > 0.5


def test_train_head_grows_with_frozen_convs_and_is_a_setting_of_its_own(data, teacher, initial, tmp_path):
    res = pb.plant_and_save(initial, teacher, data, small_cfg(max_rounds=1, finetune_head=True), tmp_path / "head",
                            progress=False)
    grown = res.model
    assert grown.widths != initial.widths
    for i, conv in enumerate(initial.convs):  # every old filter as it was; the classifier trained
        assert torch.equal(grown.convs[i].weight[: conv.weight.shape[0], : conv.weight.shape[1]], conv.weight)
    assert not torch.equal(grown.fc2.weight, initial.fc2.weight)
    # the frozen-classifier run of the same folder is another setting: refused, not reused
    with pytest.raises(pc.PlantingError, match="finetune_head"):
        pb.plant_and_save(initial, teacher, data, small_cfg(max_rounds=1), tmp_path / "head", progress=False)
    # a run at the default records no finetune_head, so runs saved before the field existed load as they were
    plain = pb.plant_and_save(initial, teacher, data, small_cfg(max_rounds=1), tmp_path / "plain", progress=False)
    assert "finetune_head" not in pc.load_checkpoint(tmp_path / "plain" / "planted.pt").meta["settings"]
    assert plain.history["chosen"].sum() == 2


def test_stop_split_chooses_on_one_half_and_stops_on_the_other(data, teacher, initial):
    res = pc.grow(initial, teacher, data, small_cfg(max_rounds=3, stop_split=True), progress=False)
    h = res.history
    ok = h[h["status"] == "ok"]
    assert ok["stop_loss"].notna().all()
    half = len(data.val) // 2
    first = pc.evaluate(initial, pc.Split(data.val.x[:half], data.val.y[:half]))
    second = pc.evaluate(initial, pc.Split(data.val.x[half:], data.val.y[half:]))
    assert h.loc[0, "val_loss"] == pytest.approx(first["loss"], abs=1e-5)
    assert h.loc[0, "stop_loss"] == pytest.approx(second["loss"], abs=1e-5)
    kept = res.chosen()
    assert kept["stop_loss"].is_monotonic_decreasing  # every kept winner lowered the stopping half's loss
    for rnd, rows in h[h["round"] > 0].groupby("round"):  # each round's winner: the lowest loss on the first half
        winner = rows.loc[rows["val_loss"].idxmin()]
        assert bool(winner["chosen"]) == (rnd in set(kept["round"]))
    if "stopped falling" in res.stop_reason:
        assert "stop_loss" in res.stop_reason


def test_a_finished_run_longer_than_the_budget_is_refused(data, teacher, initial, tmp_path):
    pb.plant_and_save(initial, teacher, data, small_cfg(max_rounds=2, stop="fixed-rounds"), tmp_path, progress=False)
    with pytest.raises(pc.PlantingError, match="kept 2 rounds, more than max_rounds=1"):
        pb.plant_and_save(initial, teacher, data, small_cfg(max_rounds=1, stop="fixed-rounds"), tmp_path,
                          progress=False)


def test_the_study_switches_are_policies(data, initial):
    """Which parameters train and which validation images stop are objects the search calls (policies.py)."""
    from planting_core.policies import SplitHalves, Validation, training_policy, validation_policy
    names = {kw: training_policy(small_cfg(**{kw: True}), initial).name for kw in ("finetune_old", "finetune_head")}
    assert names == {"finetune_old": "all", "finetune_head": "head"}
    assert training_policy(small_cfg(), initial).new_only and training_policy(small_cfg(finetune_old=True), initial).revives
    targets = torch.zeros(len(data.val), data.num_classes)
    paper, halves = (validation_policy(small_cfg(stop_split=s), data.val, targets) for s in (False, True))
    assert type(paper) is Validation and isinstance(halves, SplitHalves)
    assert (paper.stop_metric("val_kd"), halves.stop_metric("val_kd")) == ("val_kd", "stop_loss")
    assert "stop_loss" in halves(initial) and "stop_loss" not in paper(initial)
    from nets import VGGBN
    with pytest.raises(pc.PlantingError, match="finetune_head=True trains the paper's PlainCNN classifier"):
        training_policy(small_cfg(finetune_head=True), VGGBN())
