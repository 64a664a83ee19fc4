import pandas as pd
import pytest

import planting_core as pc
from planting_core import book as pb
from tools.book import BOOK_RUNS, ROOT, run_params


def rows() -> pd.DataFrame:
    data = [("student CE", "[8]", 10, 0, 0.80), ("student CE", "[8]", 10, 1, 0.82), ("student CE", "[16]", 30, 0, 0.86),
            ("planting", "the paper's search", 20, 0, 0.83), ("planting", "the paper's search", 24, 1, 0.85),
            ("pruning", "from [32]", 18, 0, 0.84), ("pruning", "from [32]", 18, 1, 0.88), ("ddnn", "[16] depth 3", 50, 0, 0.9)]
    return pd.DataFrame([dict(method=m, variant=v, widths="[]", params=p, seed=s, test_acc=a, test_loss=1.0)
                         for m, v, p, s, a in data])


def test_table_means_over_seeds():
    table = pb.comparison.comparison_table(rows()).set_index(["method", "variant"])
    assert list(table.columns) == pb.comparison.TABLE_COLUMNS[2:]
    planted = table.loc[("planting", "the paper's search")]
    assert (planted["params"], planted["acc"], planted["seeds"]) == (22, pytest.approx(0.84), 2)
    assert planted["acc_std"] == pytest.approx(pd.Series([0.83, 0.85]).std())


def test_best_within_a_budget_is_one_row_per_method_best_first():
    table = pb.comparison.comparison_table(rows())
    best = pb.comparison.best_within(table, 22)
    assert list(best["method"]) == ["pruning", "planting", "student CE"]  # ddnn has nothing that small
    assert best.loc[best["method"] == "student CE", "variant"].item() == "[8]"
    assert list(pb.comparison.best_within(table, 100)["method"])[0] == "ddnn"


def test_comparison_rows_name_the_missing_results(tmp_path):
    with pytest.raises(pc.PlantingError, match="summary.csv is missing: run notebooks 01-03"):
        pb.comparison.comparison_rows(pb.RunFolder(tmp_path))


# each method's notebook and tuned setting
SETTINGS = {"pruning": ("07", "sparsity"), "projection": ("08", "hint_weight"), "ddnn": ("09", "ddnn_T")}
METHOD_RUNS = [run for run, (*_, only) in BOOK_RUNS.items() if {"07", "08", "09"} & set(only)]


def shown(run: str) -> dict[str, str]:
    """The methods whose notebooks a book run shows, with their tuned setting."""
    return {method: setting for method, (nb, setting) in SETTINGS.items() if nb in BOOK_RUNS[run][3]}


@pytest.mark.parametrize("run", METHOD_RUNS)
def test_committed_tuning_logged_every_value_and_chose_the_lowest_validation_loss(run):
    tuning = pd.read_csv(ROOT / "results" / run / "sweep.csv").query("kind == 'tuning'")
    params = run_params(run)
    for method, setting in shown(run).items():
        rows = tuning[tuning["condition"] == method]
        assert set(rows["varied"]) == {f"{setting}={v:g}" for v in params[setting]}, method
        chosen = rows.loc[rows["stop_reason"].fillna("").str.startswith("chosen"), "varied"].unique()
        assert list(chosen) == [rows.groupby("varied")["val_loss"].mean().idxmin()], method


@pytest.mark.parametrize("run", [run for run in METHOD_RUNS if run != "fashion-mnist-5k"])
def test_other_runs_use_the_settings_tuned_on_5k_images(run):
    tuned = pd.read_csv(ROOT / "results" / "fashion-mnist-5k" / "sweep.csv").query("kind == 'tuning'")
    for method, setting in shown(run).items():
        rows = tuned[(tuned["condition"] == method) & tuned["stop_reason"].fillna("").str.startswith("chosen")]
        assert [f"{setting}={v:g}" for v in run_params(run)[setting]] == list(rows["varied"].unique()), method
