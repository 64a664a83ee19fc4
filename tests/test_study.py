"""The study's verdict rule, and the committed conditions.csv recomputed from its own numbers."""
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

import planting_core as pc
from planting_core import book as pb
from planting_core.book.study import conditions_table, conditions_view, point_verdict, verdict, welch_interval
from tools.book import BOOK_RUNS, run_params

ROOT = Path(__file__).resolve().parents[1]
STUDENT_SETTINGS = json.dumps({"epochs": 15})
PLANT_SETTINGS = json.dumps({"train": {"epochs": 10}})


def students(accs: dict[int, list[float]], val_acc: float = 0.8) -> pd.DataFrame:
    """sweep.csv rows of CE students: width -> test accuracy per seed ([8] has 13,000 parameters, [16] 29,000)."""
    size = {8: 13_000, 16: 29_000}
    return pd.DataFrame([dict(kind="student", condition="student CE", seed=s, widths=json.dumps([w] * 5),
                              params=size[w], val_acc=val_acc, test_acc=a, settings=STUDENT_SETTINGS, candidates=0,
                              seconds=6.0)
                         for w, seeds in accs.items() for s, a in enumerate(seeds)])


def planted(params: list[int], accs: list[float], condition: str = "c", val_acc: float = 0.8) -> pd.DataFrame:
    return pd.DataFrame(dict(kind="planting", condition=condition, seed=range(len(params)), params=params,
                             test_acc=accs, val_acc=val_acc, settings=PLANT_SETTINGS, candidates=10, seconds=120.0))


STUDENTS = students({8: [0.80, 0.81, 0.82], 16: [0.84, 0.85, 0.86]})


def test_welch_interval_agrees_with_scipys_welch_test():
    a, b = np.array([0.83, 0.85, 0.84, 0.86]), np.array([0.80, 0.83, 0.81])
    diff, lo, hi = welch_interval(a, b)
    ci = stats.ttest_ind(a, b, equal_var=False).confidence_interval(0.95)
    assert diff == pytest.approx(a.mean() - b.mean()) and (lo, hi) == pytest.approx((ci.low, ci.high))
    assert np.isnan(welch_interval(a, b[:1])[1])  # one seed on a side: no interval


@pytest.mark.parametrize("params, accs, v1, v2", [
    ([14_000, 16_000, 15_000], [0.85, 0.86, 0.855], "helps", "inconclusive"),  # above [8]; [16] within noise
    ([14_000, 16_000, 15_000], [0.70, 0.71, 0.72], "does not help", "does not help"),
    ([14_000, 16_000, 15_000], [0.80, 0.83, 0.81], "inconclusive", "does not help"),
    ([7_000, 7_000], [0.70, 0.71], "inconclusive", "does not help"),  # no student that small: no verdict at 1x
])
def test_verdicts_follow_the_amended_protocol(params, accs, v1, v2):
    row = conditions_table(pd.concat([planted(params, accs), STUDENTS])).iloc[0]
    assert (row["verdict_1x"], row["verdict_2x"]) == (v1, v2)
    assert row["planted_params_mean"] == pytest.approx(sum(params) / len(params))
    assert row["compute_epochs"] == 15 + 10 * 10  # the initial network's epochs, then 10 candidates x 10 epochs
    for tag in ("1x", "2x"):  # the interval is the verdict's reason; the point rule is kept beside it
        lo, hi = row[f"diff_{tag}_lo"], row[f"diff_{tag}_hi"]
        assert row[f"verdict_{tag}"] == ("helps" if lo > 0 else "does not help" if hi < 0 else "inconclusive")
    assert row["point_verdict_1x"] == ("no student that small" if params[0] < 13_000 else
                                       "helps" if np.mean(accs) >= 0.81 else "does not help")


def test_collapsed_networks_are_left_out_of_both_sides():
    sweep = pd.concat([planted([15_000] * 3, [0.85, 0.86, 0.10], val_acc=0.8), STUDENTS,
                       students({8: [0.10]}, val_acc=0.12).assign(seed=3)])
    sweep.loc[(sweep["kind"] == "planting") & (sweep["test_acc"] == 0.10), "val_acc"] = 0.11
    row = conditions_table(sweep).iloc[0]
    assert (row["seeds"], row["collapsed"]) == (2, 1)
    assert row["planted_acc_mean"] == pytest.approx(0.855) and row["best_student_le_1x"] == pytest.approx(0.81)
    assert row["yardstick_1x"] == "[8] CE"


def test_the_readable_view_shows_intervals_and_the_old_verdict_where_it_differs():
    table = pd.concat([conditions_table(pd.concat([planted([20_000, 24_000], [0.85, 0.86], "a"), STUDENTS])),
                       conditions_table(pd.concat([planted([13_500], [0.79], "b"), STUDENTS]))], ignore_index=True)
    view = conditions_view(table)
    assert view.index.tolist() == ["a", "b"]
    assert view.loc["a", "test acc (%)"] == "85.50 ± 0.71" and view.loc["b", "test acc (%)"] == "79.00"  # one seed
    assert view.loc["a", "yardstick ≤ 2x"] == "[16] CE, 15 epochs" and view.loc["a", "params (mean)"] == 22_000
    assert view.loc["a", "minutes"] == 2.0 and view.loc["a", "epochs"] == 115
    assert view.loc["a", "verdict ≤ 1x"] == "helps" and view.loc["a", "verdict ≤ 2x"] == "inconclusive (point rule: helps)"
    assert view.loc["b", "difference ≤ 1x (points, 95% CI)"] == "-2.00 (no interval)"


def test_verdict_words():
    assert verdict(0.001, 0.02) == "helps" and verdict(-0.02, -0.001) == "does not help"
    assert verdict(-0.01, 0.01) == "inconclusive" and verdict(float("nan"), float("nan")) == "inconclusive"
    assert point_verdict(0.9, float("nan")) == "no student that small"
    assert point_verdict(0.9, 0.9) == "helps" and point_verdict(0.89, 0.9) == "does not help"


def test_every_condition_has_a_distinct_name_and_a_cause():
    names = [c.name for c in pb.study.CONDITIONS]
    assert len(set(names)) == len(names) and all(c.cause for c in pb.study.CONDITIONS)
    assert pb.study.CONDITIONS[0].describe() == "none"


@pytest.mark.parametrize("run", [run for run, (*_, only) in BOOK_RUNS.items() if "06" in only])
def test_committed_verdicts_recompute_from_their_numbers(run):
    """Every interval and verdict of conditions.csv, recomputed from sweep.csv: by the library, and each interval
    independently by scipy's Welch test on the seeds' accuracies."""
    table = pd.read_csv(ROOT / "results" / run / "conditions.csv")
    sweep_ = pd.read_csv(ROOT / "results" / run / "sweep.csv")
    assert list(table["condition"]) == run_params(run)["conditions"]  # what the book run shows
    pd.testing.assert_frame_equal(conditions_table(sweep_), table, check_dtype=False)
    for _, row in table.iterrows():
        runs = sweep_[(sweep_["kind"] == "planting") & (sweep_["condition"] == row["condition"])]
        runs = runs[runs["val_acc"] > 0.2]
        assert row["planted_acc_mean"] == pytest.approx(runs["test_acc"].mean())
        for tag in ("1x", "2x"):
            name = row[f"yardstick_{tag}"]
            if name == "none that small":
                continue
            width, loss = name.split()
            stick = sweep_[(sweep_["kind"] == "student") & (sweep_["condition"] == f"student {loss}")
                           & (sweep_["widths"] == json.dumps([int(width[1:-1])] * 5)) & (sweep_["val_acc"] > 0.2)]
            if len(stick) > 1:
                ci = stats.ttest_ind(runs["test_acc"], stick["test_acc"], equal_var=False).confidence_interval(0.95)
                assert (row[f"diff_{tag}_lo"], row[f"diff_{tag}_hi"]) == pytest.approx((ci.low, ci.high))
            lo, hi = row[f"diff_{tag}_lo"], row[f"diff_{tag}_hi"]
            assert row[f"verdict_{tag}"] == ("helps" if lo > 0 else "does not help" if hi < 0 else "inconclusive")


def test_the_named_conditions_have_ten_seeds_on_the_small_regimes():
    for run in ("fashion-mnist-5k", "fashion-mnist-1k"):
        table = pd.read_csv(ROOT / "results" / run / "conditions.csv").set_index("condition")
        named = [c for c in pb.study.VERDICT_CONDITIONS if c in table.index]
        assert named and ((table.loc[named, "seeds"] + table.loc[named, "collapsed"]) >= 10).all(), run


def test_a_condition_that_changes_the_teacher_gets_its_own(tmp_path):
    folder, params = pb.RunFolder(tmp_path), pb.with_defaults({"teacher_width": 16})
    path, widths, cfg = pb.study.condition_teacher(folder, pb.study.BY_NAME["paper"], params)
    assert (path, widths, cfg.augment) == (folder.teacher, [16] * 5, False)
    path, widths, cfg = pb.study.condition_teacher(folder, pb.study.BY_NAME["teacher-128"], params)
    assert (path, widths) == (folder.study_teacher("teacher-128"), [128] * 5)
    path, widths, cfg = pb.study.condition_teacher(folder, pb.study.BY_NAME["teacher-aug"], params)
    assert (widths, cfg.augment, cfg.loss) == ([16] * 5, True, "ce")
    assert pb.study.BY_NAME["teacher-aug"].describe() == "teacher augment=True"


def test_a_condition_whose_every_seed_collapsed_says_so_and_still_shows():
    table = conditions_table(pd.concat([planted([13_050] * 2, [0.10, 0.10], val_acc=0.1), STUDENTS]))
    row = table.iloc[0]
    assert (row["seeds"], row["collapsed"], row["verdict_2x"]) == (0, 2, "every seed collapsed")
    assert conditions_view(table).loc["c", "verdict ≤ 2x"] == "every seed collapsed"


def test_a_network_counted_twice_is_refused_and_no_spread_is_no_interval():
    with pytest.raises(pc.PlantingError, match="holds 1 network.s. twice, e.g. student student CE seed 0"):
        conditions_table(pd.concat([planted([15_000] * 2, [0.85, 0.86]), STUDENTS, STUDENTS.iloc[:1]]))
    same = students({8: [0.81, 0.81]})
    row = conditions_table(pd.concat([planted([15_000] * 2, [0.85, 0.85]), same])).iloc[0]
    assert np.isnan(row["diff_1x_lo"]) and row["verdict_1x"] == "inconclusive"  # identical seeds: no interval
