"""The study's verdict rule, and the committed conditions.csv recomputed from its own numbers."""
from pathlib import Path

import pandas as pd
import pytest

import planting_core as pc
from planting_core.book.report import student_means
from planting_core.book.study import best_student_acc, conditions_table, conditions_view, verdict
from tools.book import BOOK_RUNS, run_params

ROOT = Path(__file__).resolve().parents[1]
STUDENTS = pd.DataFrame(dict(widths=["[8]", "[8]", "[16]", "[16]"], loss_fn="ce", seed=[0, 1, 0, 1],
                             params=[13_000, 13_000, 29_000, 29_000], test_acc=[0.80, 0.82, 0.84, 0.86]))


def sweep(params: list[int], accs: list[float], condition: str = "c") -> pd.DataFrame:
    return pd.DataFrame(dict(kind="planting", condition=condition, seed=range(len(params)), params=params,
                             test_acc=accs))


def test_best_student_is_the_best_mean_within_the_size():
    means = student_means(STUDENTS)
    assert best_student_acc(means, 13_000) == pytest.approx(0.81)
    assert best_student_acc(means, 28_999) == pytest.approx(0.81)
    assert best_student_acc(means, 29_000) == pytest.approx(0.85)
    assert best_student_acc(means, 12_999) != best_student_acc(means, 12_999)  # NaN: none that small


@pytest.mark.parametrize("params, accs, v1, v2", [
    ([14_000, 16_000], [0.83, 0.83], "helps", "does not help"),  # beats [8] (0.81); [16] (0.85) is within 2x
    ([14_000, 16_000], [0.80, 0.81], "does not help", "does not help"),
    ([30_000, 30_000], [0.85, 0.85], "helps", "helps"),  # a tie counts as reaching the student
    ([7_000, 7_000], [0.70, 0.70], "no student that small", "does not help"),
])
def test_verdicts_follow_the_protocol(params, accs, v1, v2):
    row = conditions_table(sweep(params, accs), STUDENTS).iloc[0]
    assert (row["verdict_1x"], row["verdict_2x"]) == (v1, v2)
    assert row["planted_params_mean"] == pytest.approx(sum(params) / len(params))


def test_the_readable_view_shows_each_condition_in_percent():
    table = pd.concat([conditions_table(sweep([20_000, 24_000], [0.85, 0.86], "a"), STUDENTS),
                       conditions_table(sweep([13_500], [0.79], "b"), STUDENTS)], ignore_index=True)
    view = conditions_view(table)
    assert view.index.tolist() == ["a", "b"]
    assert view.loc["a", "test acc (%)"] == "85.50 ± 0.71" and view.loc["b", "test acc (%)"] == "79.00"  # one seed
    assert view.loc["a", "params (mean)"] == 22_000 and view.loc["a", "best student ≤ 2x (%)"] == 85.0
    assert view.loc["a", "at matched size"] == "helps" and view.loc["b", "at twice the size"] == "does not help"


def test_verdict_words():
    assert verdict(0.9, float("nan")) == "no student that small"
    assert verdict(0.9, 0.9) == "helps" and verdict(0.89, 0.9) == "does not help"


def test_every_condition_has_a_distinct_name_and_a_cause():
    names = [c.name for c in pc.study.CONDITIONS]
    assert len(set(names)) == len(names) and all(c.cause for c in pc.study.CONDITIONS)
    assert pc.study.CONDITIONS[0].describe() == "none"


@pytest.mark.parametrize("run", [run for run, (*_, only) in BOOK_RUNS.items() if "06" in only])
def test_committed_verdicts_recompute_from_their_numbers(run):
    table = pd.read_csv(ROOT / "results" / run / "conditions.csv")
    sweep_ = pd.read_csv(ROOT / "results" / run / "sweep.csv")
    assert list(table["condition"]) == run_params(run)["conditions"]  # what the book run shows, 3 seeds each
    assert (table["seeds"] == 3).all()
    for _, row in table.iterrows():
        assert row["verdict_1x"] == verdict(row["planted_acc_mean"], row["best_student_le_1x"])
        assert row["verdict_2x"] == verdict(row["planted_acc_mean"], row["best_student_le_2x"])
        runs = sweep_[(sweep_["kind"] == "planting") & (sweep_["condition"] == row["condition"])]
        assert row["planted_acc_mean"] == pytest.approx(runs["test_acc"].mean())
    students = pd.read_csv(ROOT / "results" / run / "students.csv")
    pd.testing.assert_frame_equal(conditions_table(sweep_, students), table, check_dtype=False)


def test_a_condition_that_changes_the_teacher_gets_its_own(tmp_path):
    folder, params = pc.RunFolder(tmp_path), pc.with_defaults({"teacher_width": 16})
    path, widths, cfg = pc.study.condition_teacher(folder, pc.study.BY_NAME["paper"], params)
    assert (path, widths, cfg.augment) == (folder.teacher, [16] * 5, False)
    path, widths, cfg = pc.study.condition_teacher(folder, pc.study.BY_NAME["teacher-128"], params)
    assert (path, widths) == (folder.study_teacher("teacher-128"), [128] * 5)
    path, widths, cfg = pc.study.condition_teacher(folder, pc.study.BY_NAME["teacher-aug"], params)
    assert (widths, cfg.augment, cfg.loss) == ([16] * 5, True, "ce")
    assert pc.study.BY_NAME["teacher-aug"].describe() == "teacher augment=True"
