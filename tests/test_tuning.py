import pandas as pd
import pytest
import torch

import planting_core as pc
from planting_core import book as pb


def row(val_loss: float) -> dict:
    return dict(kind="tuning", condition="m", seed=0, varied="", settings="{}", rounds=0, widths="[4]", params=1,
                val_loss=val_loss, val_acc=0.5, test_acc=0.5, candidates=0, seconds=1.0, stop_reason="")


def test_tune_picks_the_lowest_mean_validation_loss_and_logs_every_network():
    losses = {0.1: [0.5, 0.7], 1.0: [0.4, 0.6], 10.0: [0.3, 0.9]}  # means 0.6, 0.5, 0.6
    best, table = pb.tuning.tune("w", list(losses), lambda v: [row(x) for x in losses[v]])
    assert best == 1.0
    assert list(table.columns) == pb.tuning.SWEEP_COLUMNS and len(table) == 6
    assert list(table["varied"].unique()) == ["w=0.1", "w=1", "w=10"]
    chosen = table[table["stop_reason"].str.startswith("chosen")]
    assert set(chosen["varied"]) == {"w=1"} and len(chosen) == 2
    tie, _ = pb.tuning.tune("w", [3.0, 2.0], lambda v: [row(0.5)])
    assert tie == 3.0  # a tie goes to the first value listed


def test_test_accuracy_never_decides():
    rows = {1.0: dict(row(0.4), test_acc=0.1), 2.0: dict(row(0.5), test_acc=0.99)}
    best, _ = pb.tuning.tune("w", [1.0, 2.0], lambda v: [rows[v]])
    assert best == 1.0


def test_replace_rows_keeps_the_other_notebooks_rows(tmp_path):
    path = tmp_path / "sweep.csv"
    pb.tuning.replace_rows(path, pd.DataFrame([dict(row(0.1), condition="a")]), "condition", ["a"])
    pb.tuning.replace_rows(path, pd.DataFrame([dict(row(0.2), condition="b")]), "condition", ["b"])
    table = pb.tuning.replace_rows(path, pd.DataFrame([dict(row(0.3), condition="a")] * 2), "condition", ["a"])
    assert sorted(table["condition"]) == ["a", "a", "b"]
    assert set(table.loc[table["condition"] == "a", "val_loss"]) == {0.3}


def test_network_row_reads_the_checkpoint_or_what_it_is_given(data):
    net = pc.PlainCNN([4] * 5, **data.model_kwargs())
    pc.fit(net, data, pc.TrainConfig(epochs=2, lr=0.01, batch_size=32, progress=False))
    net.meta = {"history": [{"val_loss": 0.9, "val_acc": 0.3, "seconds": 1.5}, {"val_loss": 0.8, "val_acc": 0.4,
                                                                                 "seconds": 2.0}],
                "test_acc": 0.35, "settings": {"lr": 0.01}}
    r = pb.tuning.network_row("tuning", "m", 1, "x=1", net)
    assert (r["val_loss"], r["val_acc"], r["test_acc"], r["seconds"]) == (0.8, 0.4, 0.35, 3.5)
    assert r["params"] == pc.count_parameters(net) and r["widths"] == "[4, 4, 4, 4, 4]"
    measured = pb.tuning.network_row("tuning", "m", 1, "x=1", net, pc.evaluate(net, data.val), {"acc": 0.5})
    assert measured["val_loss"] == pytest.approx(pc.evaluate(net, data.val)["loss"]) and measured["test_acc"] == 0.5
    assert torch.isfinite(torch.tensor(measured["val_loss"]))


def test_a_diverged_value_never_wins():
    losses = {1.0: float("nan"), 2.0: 0.9}
    best, _ = pb.tuning.tune("w", [1.0, 2.0], lambda v: [row(losses[v])])
    assert best == 2.0


def test_a_method_network_left_out_of_the_repository_still_counts_once(data, tmp_path):
    folder = pb.RunFolder(tmp_path)
    net_path = tmp_path / "methods" / "pruning" / "sparsity-0.1" / "w8-sparse-seed0.pt"
    pb.load_or_train(net_path, [4] * 5, data, pc.TrainConfig(epochs=1, lr=0.02, batch_size=32, progress=False))

    def pruning():
        return pb.compute_time(folder.root).set_index("stage").loc["pruning (every network tried)"]
    kept = pruning()
    seconds = sum(e["seconds"] for e in pc.load_checkpoint(net_path).meta["history"])
    pd.DataFrame([dict(file=net_path.name, seconds=seconds)]).to_csv(net_path.parent / pb.report.LEFT_OUT, index=False)
    assert pruning()["seconds"] == pytest.approx(kept["seconds"])  # the file is there: counted from it, once
    moved = net_path.rename(tmp_path / "elsewhere.pt")
    assert pruning()["seconds"] == pytest.approx(kept["seconds"]) and pruning()["runs"] == kept["runs"]
    moved.unlink()
    (net_path.parent / pb.report.LEFT_OUT).unlink()
    assert pruning()["seconds"] == 0


def test_a_student_left_out_by_the_tool_counts_once_and_is_not_published(data, tmp_path, monkeypatch):
    from tools import leave_out
    folder = pb.RunFolder(tmp_path)
    path = folder.student(4, "ce", 0)
    pb.load_or_train(path, [4] * 5, data, pc.TrainConfig(epochs=1, lr=0.02, batch_size=32, progress=False))

    def students():
        return pb.compute_time(folder.root).set_index("stage").loc["fixed-width students"]
    kept = students()
    monkeypatch.setattr(leave_out.subprocess, "run", lambda *a, **k: None)  # not a git repository here
    leave_out.leave_out([path])
    assert (path.parent / ".gitignore").read_text() == f"/{path.name}\n"
    assert "students/" + path.name not in pb.fetch.published_files(folder.root)  # kept here, not published
    path.unlink()  # as in a fresh clone
    assert students()["seconds"] == pytest.approx(kept["seconds"]) and students()["runs"] == kept["runs"] == 1
    with pytest.raises(SystemExit, match="not a checkpoint file"):
        leave_out.main([str(path)])
