"""The notebooks: structure, a smoke run of all of them through the batch runner, then nbval on the copies."""
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch

import planting_core as pc
from planting_core import book as pb
from conftest import serve, tiny_notebook
from tools.batch import notebook_parameters, notebooks, run_batch

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def smoke(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("smoke")
    run_batch("fashion-mnist", "smoke", out=out)
    return out


@pytest.mark.parametrize("path", notebooks(), ids=lambda p: p.name)
def test_notebook_structure(path):
    nb = json.loads(path.read_text())
    assert nb["metadata"]["kernelspec"]["name"] == "python3"
    tagged = [c for c in nb["cells"] if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(tagged) == 1, "exactly one cell tagged 'parameters'"
    assert "colab.research.google.com" in "".join(nb["cells"][0]["source"])
    assert not any(c.get("outputs") for c in nb["cells"] if c["cell_type"] == "code"), "sources are kept clean"
    params = notebook_parameters(path)
    if path.stem != "05_performance":
        for name in ("dataset", "data_root", "subset", "seed", "widths", "epochs", "batch_size", "lr", "device",
                     "out_dir"):
            assert name in params or (name == "widths" and path.stem == "11_own_network"), name  # 11: its own nets


def test_smoke_run_writes_every_result(smoke):
    for name in ("teacher.pt", "students.csv", "summary.csv", "ablations.csv", "planting/seed0/history.csv",
                 "planting/seed0/planted.pt", "figures/planting_search.png", "figures/planting_accuracy_vs_params.png",
                 "figures/planting_widths.png", "figures/ablations.png"):
        assert (smoke / name).exists(), name
    summary = pd.read_csv(smoke / "summary.csv")
    assert list(summary.columns) == pb.SUMMARY_COLUMNS
    assert set(summary["model"]) == {"teacher", "student", "initial", "planted"}
    for nb in (smoke / "notebooks").glob("*.ipynb"):
        cells = json.loads(nb.read_text())["cells"]
        assert not any(o.get("output_type") == "error" for c in cells for o in c.get("outputs", [])), nb.name
    cost = pb.compute_time(smoke).set_index("stage")
    assert (cost["runs"] > 0).all() and (cost["seconds"] > 0).all()
    assert cost.loc["fixed-width students", "runs"] == len(pd.read_csv(smoke / "students.csv"))
    assert cost.loc["total", "seconds"] == pytest.approx(cost["seconds"].drop("total").sum())


def smoke_copy(smoke: Path, tmp_path: Path) -> tuple[Path, list]:
    """A scratch copy of the smoke run folder (executed notebooks too) and its batch plan there."""
    from tools.batch import plan_batch
    out = tmp_path / "copy"
    shutil.copytree(smoke, out, ignore=shutil.ignore_patterns(".lock", ".lock.pid"))
    return out, plan_batch("fashion-mnist", "smoke", {}, out, None)


def test_notebooks_whose_inputs_changed_are_stale_and_the_others_are_not(smoke, tmp_path):
    from tools.batch import executed_with, stale_reason
    out, plan = smoke_copy(smoke, tmp_path)
    assert all(stale_reason(nb, dest, params) == "" for nb, dest, params in plan)  # a faithful copy is fresh
    table = pd.read_csv(out / "students.csv")
    table.loc[0, "test_acc"] = 0.99  # one row of one table the notebooks read
    table.to_csv(out / "students.csv", index=False)
    readers = {dest.name for _, dest, _ in plan if "students.csv" in executed_with(dest).get("inputs", {})}
    assert readers  # notebook 03 reads it
    for nb, dest, params in plan:
        why = stale_reason(nb, dest, params)
        assert bool(why) == (dest.name in readers or "students.csv" in executed_with(dest).get("outputs", {})), \
            (dest.name, why)
        assert not why or "students.csv, which it" in why


def test_strict_publishing_refuses_an_edited_table_or_a_truncated_checkpoint(smoke, tmp_path):
    from tools.batch import run_plan
    out, plan = smoke_copy(smoke, tmp_path)
    (out / "summary.csv").write_text((out / "summary.csv").read_text().replace("0.", "0.9", 1))  # an edited result
    with pytest.raises(pc.PlantingError, match=r"03_planting.ipynb is stale: .*summary.csv, which it wrote, changed"):
        run_plan(plan, force=False, strict=True)
    data = (out / "teacher.pt").read_bytes()
    (out / "teacher.pt").write_bytes(data[: len(data) // 2])  # a truncated checkpoint
    with pytest.raises(pc.CheckpointError, match="teacher.pt: damaged"):
        pb.write_manifest(out, {"dataset": "fashion-mnist"})
    assert not (out / "checkpoints.json").exists() or "teacher.pt" not in (out / "checkpoints.json").read_text()


def test_notebooks_start_from_published_checkpoints(smoke, tmp_path):
    pb.write_manifest(smoke, {"dataset": "fashion-mnist", **pb.PROFILES["smoke"]})
    out = tmp_path / "fetched"
    with serve(smoke) as url:
        run_batch("fashion-mnist", "smoke", {"checkpoint_url": url}, out=out, only=["01", "02"])
    assert (out / "teacher.pt").read_bytes() == (smoke / "teacher.pt").read_bytes()
    for name in ("students.csv",):
        assert pd.read_csv(out / name).equals(pd.read_csv(smoke / name))
    text = (out / "notebooks" / "01_teacher.ipynb").read_text()
    assert "published files fetched from" in text
    assert not list(out.rglob("*.state.pt"))  # nothing was trained: every network came from the manifest


def test_study_notebook_writes_sweep_and_verdicts(smoke, tmp_path):
    out = tmp_path / "study"
    shutil.copytree(smoke, out, ignore=shutil.ignore_patterns("notebooks", ".lock"))
    conditions = ["paper", "epochs-3", "initial-4", "teacher-aug"]
    run_batch("fashion-mnist", "smoke", {"conditions": conditions, "seeds": [0, 1]}, out=out, only=["06"])
    sweep, table = pd.read_csv(out / "sweep.csv"), pd.read_csv(out / "conditions.csv")
    assert list(table.columns) == pb.study.CONDITION_COLUMNS
    assert list(table["condition"]) == conditions and (table["seeds"] + table["collapsed"] == 2).all()
    teacher = pc.load_checkpoint(pb.RunFolder(out).study_teacher("teacher-aug"))  # the condition's own teacher
    assert teacher.meta["settings"]["augment"] is True
    grown = pc.load_checkpoint(pb.RunFolder.planted(pb.RunFolder(out).study("teacher-aug", 0)))
    assert grown.meta["settings"]["teacher"] == pc.checkpoint.fingerprint(teacher)
    assert set(sweep["kind"]) == {"planting", "student"}
    assert sweep.loc[sweep["kind"] == "student", "seed"].nunique() == 2  # seed 1's students trained for the study
    recomputed = pb.study.conditions_table(sweep)
    pd.testing.assert_frame_equal(recomputed, table, check_dtype=False)


def test_student_tuning_is_logged_with_its_choice(smoke, tmp_path):
    out = tmp_path / "tuned"
    shutil.copytree(smoke, out, ignore=shutil.ignore_patterns("notebooks", ".lock"))
    run_batch("fashion-mnist", "smoke", {"tune_lr": [0.01, 0.05]}, out=out, only=["02"])
    rows = pd.read_csv(out / "sweep.csv").query("kind == 'tuning' and condition == 'student'")
    assert len(rows) == 4 and set(rows["widths"]) == {str([16] * 5), str([32] * 5)}  # 2 settings x [16], [32]
    means = rows.groupby("varied")["val_loss"].mean()
    chosen = rows[rows["stop_reason"].fillna("").str.startswith("chosen")]["varied"].unique()
    assert list(chosen) == [means.idxmin()]  # validation chose, and only validation
    text = (out / "notebooks" / "02_baselines.ipynb").read_text()
    assert "Validation prefers learning rate" in text and "does not agree with" in text  # neither is the lr used


def test_nbval_reruns_the_smoke_copies(smoke):
    proc = subprocess.run([sys.executable, "-m", "pytest", "--nbval-lax", "-p", "no:cacheprovider", "-q",
                           "--sanitize-with", str(ROOT / "tests" / "nbval_sanitize.cfg"), str(smoke / "notebooks")],
                          capture_output=True, text=True, cwd=smoke)
    assert proc.returncode == 0, proc.stdout[-5000:] + proc.stderr[-2000:]
    assert " passed" in proc.stdout


def test_batch_unknown_dataset_is_one_clear_line():
    proc = subprocess.run([sys.executable, "-m", "tools.batch", "--dataset", "imagenet"],
                          capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 2
    assert "unknown dataset 'imagenet'; known datasets: cifar10, cifar100, stl10, fashion-mnist" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_batch_list_shows_datasets_and_parameters():
    proc = subprocess.run([sys.executable, "-m", "tools.batch", "--list"], capture_output=True, text=True,
                          cwd=ROOT)
    assert proc.returncode == 0
    assert "imagefolder" in proc.stdout and "03_planting.ipynb" in proc.stdout and "plant_epochs = 10" in proc.stdout


def test_batch_rejects_unknown_and_mistyped_parameters(tmp_path):
    with pytest.raises(pc.PlantingError, match="unknown parameter"):
        run_batch("fashion-mnist", "smoke", {"epochz": 3}, out=tmp_path)
    with pytest.raises(pc.PlantingError, match="parameter 'epochs' must be an integer from 1 to 10000, got '3'"):
        run_batch("fashion-mnist", "smoke", {"epochs": "3"}, out=tmp_path)


@pytest.mark.parametrize("sets,only,match", [
    ({"T": 0}, None, "parameter 'T' must be a number above 0"),  # used by notebook 02 on: refused before 01 runs
    ({"seeds": []}, None, "parameter 'seeds' must be a non-empty list"),
    ({"student_widths": [0]}, None, "parameter 'student_widths' must be"),
    ({"quick": "abc"}, ["05"], "parameter 'quick' must be True or False"),
    ({"quick": True}, None, r"unknown parameter\(s\) \['quick'\]"),  # notebook 05 runs only when named
    ({"out_dir": "elsewhere"}, None, "out_dir cannot be set"),
    ({}, ["zzz"], "no notebook matches --only zzz"),
])
def test_batch_checks_everything_before_any_notebook_runs(tmp_path, sets, only, match):
    with pytest.raises(pc.PlantingError, match=match):
        run_batch("fashion-mnist", "smoke", sets, out=tmp_path, only=only)
    assert not (tmp_path / "notebooks").exists()  # nothing ran


def test_a_failed_notebook_never_replaces_a_good_executed_one(tmp_path):
    from tools.batch import run_notebook
    src = tmp_path / "src" / "00_tiny.ipynb"
    tiny_notebook(src, "assert x == 1, 'x is not 1'")
    dest = tmp_path / "run" / "00_tiny.ipynb"
    run_notebook(src, dest, {"x": 1}, tmp_path)
    good = dest.read_text()
    with pytest.raises(Exception, match="x is not 1"):
        run_notebook(src, dest, {"x": 2}, tmp_path)
    assert dest.read_text() == good
    assert "x is not 1" in (tmp_path / "run" / "00_tiny.failed.ipynb").read_text()


def test_notebook_itself_names_a_mistyped_parameter(tmp_path):
    import papermill as pm
    with pytest.raises(pm.PapermillExecutionError, match="parameter 'subset' must be"):
        pm.execute_notebook(str(ROOT / "notebooks" / "01_teacher.ipynb"), str(tmp_path / "out.ipynb"),
                            parameters={"subset": "5000", "out_dir": str(tmp_path)}, kernel_name="python3",
                            progress_bar=False, cwd=str(tmp_path))


def test_a_source_edited_during_its_run_leaves_the_copy_stale(tmp_path, monkeypatch):
    import nbformat
    import papermill as pm
    from tools.batch import executed_with, run_notebook, source_hash
    src = tmp_path / "src" / "00_tiny.ipynb"
    nb = tiny_notebook(src, "print(x)")
    real = pm.execute_notebook

    def edit_meanwhile(*args, **kwargs):
        out = real(*args, **kwargs)
        nb.cells[1].source = "print(x + 1)"  # someone edits the source while it runs
        nbformat.write(nb, src)
        return out
    monkeypatch.setattr(pm, "execute_notebook", edit_meanwhile)
    dest = tmp_path / "run" / "00_tiny.ipynb"
    run_notebook(src, dest, {"x": 2}, tmp_path)
    assert executed_with(dest)["source_hash"] != source_hash(src, {"x": 2})  # so the next run re-executes it
    assert "2" in json.dumps(json.loads(dest.read_text())["cells"][-1]["outputs"])


def test_the_source_hash_ignores_how_a_cell_source_is_stored(tmp_path):
    from tools.batch import source_hash
    nb = json.loads((ROOT / "notebooks" / "01_teacher.ipynb").read_text())
    as_text, as_lines = tmp_path / "text.ipynb", tmp_path / "lines.ipynb"
    as_text.write_text(json.dumps(nb))
    for cell in nb["cells"]:  # nbformat allows a list of lines as well as one string
        cell["source"] = "".join(cell["source"]).splitlines(keepends=True)
    as_lines.write_text(json.dumps(nb))
    assert source_hash(as_text, {"seed": 0}) == source_hash(as_lines, {"seed": 0})
    assert source_hash(as_text, {"seed": 0}) != source_hash(as_text, {"seed": 1})


def test_batch_runs_several_datasets_at_once(tmp_path, monkeypatch, capsys):
    from PIL import Image

    from tools.batch import main
    images = tmp_path / "images"
    # three classes of 40 noisy 16x16 images around a class pattern, in train/ and test/: the shared data_root also
    # receives fashion-mnist's staged FashionMNIST/ folder, which a root-level class layout would race to read
    for k in range(3):
        pattern = torch.rand(16, 16, generator=torch.Generator().manual_seed(k))
        for i in range(40):
            folder = images / ("train" if i < 30 else "test") / f"c{k}"
            folder.mkdir(parents=True, exist_ok=True)
            noisy = (pattern + 0.3 * torch.rand(16, 16)).clamp(0, 1)
            Image.fromarray((noisy * 255).byte().numpy()).save(folder / f"{i}.png")
    monkeypatch.chdir(tmp_path)
    code = main(["--dataset", "fashion-mnist", "--dataset", "imagefolder", "--profile", "smoke", "--only", "01",
                 "--set", f"data_root={str(images)!r}", "--set", "subset=64", "--set", "val_size=16", "--jobs", "2"])
    out = capsys.readouterr().out
    assert code == 0, out
    for name in ("fashion-mnist", "imagefolder"):
        assert (tmp_path / "runs" / f"{name}-smoke" / "teacher.pt").exists()
        assert f"[{name}] [1/1] 01_teacher ... ok" in out


@pytest.mark.parametrize("argv, match", [
    (["--dataset", "fashion-mnist", "--dataset", "fashion-mnist"], "named twice"),
    (["--dataset", "fashion-mnist", "--dataset", "cifar10", "--out", "x"], "--out names one run folder"),
    (["--dataset", "fashion-mnist", "--jobs", "0"], "--jobs must be a positive integer"),
    (["--dataset", "fashion-mnist", "--dataset", "cifar10", "--set", "epochz=1"], "unknown parameter"),
])
def test_batch_of_several_datasets_checks_before_running(argv, match, tmp_path, monkeypatch, capsys):
    from tools.batch import main
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    assert match in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()


def test_method_notebooks_write_their_rows(smoke, tmp_path):
    out = tmp_path / "methods"
    shutil.copytree(smoke, out, ignore=shutil.ignore_patterns("notebooks", ".lock"))
    run_batch("fashion-mnist", "smoke", {"prune_from": [8], "prune_budgets": [8000, 10000], "project_widths": [4],
                                         "guide_epochs": 1, "ddnn_widths": [8], "ddnn_T": [1.0, 4.0]}, out=out,
              only=["07", "08", "09", "10"])
    rows = pd.read_csv(out / "methods.csv")
    assert list(rows.columns) == pb.METHOD_COLUMNS and set(rows["method"]) == {"pruning", "projection", "ddnn"}
    ddnn = rows[rows["method"] == "ddnn"]
    assert list(ddnn["variant"]) == [f"[8]*5 depth {k}" for k in (3, 4, 5)]
    assert ddnn["params"].nunique() == 3  # each depth its own size (its convs and its head)
    pruned = rows[rows["variant"].str.startswith("from [8]*5 to")]
    assert len(pruned) == 2 and (pruned["params"] <= 10000).all() and pruned["params"].min() <= 8000
    assert set(pruned["variant"]) == {"from [8]*5 to 8,000 parameters", "from [8]*5 to 10,000 parameters"}
    assert len(rows[rows["method"] == "projection"]) == 1
    pairs = pd.read_csv(out / "methods" / "projection" / "hint-1" / "w4-seed0-pairs.csv")
    assert len(pairs) == 11 and (pairs["seconds"] > 0).all()
    assert (pd.read_csv(out / "methods" / "pruning" / "sparsity-0.0001" / "w8-seed0-steps.csv")["seconds"] > 0).all()
    for figure in ("pruning_vs_planting.png", "projection_vs_planting.png", "ddnn_vs_planting.png", "comparison.png"):
        assert (out / "figures" / figure).exists()
    # every configuration tried is logged; the temperature chosen is the lowest mean validation loss of its rows
    tuning = pd.read_csv(out / "sweep.csv").query("kind == 'tuning'")
    assert set(tuning["condition"]) == {"pruning", "projection", "ddnn"}
    ddnn_tuning = tuning[tuning["condition"] == "ddnn"]
    assert set(ddnn_tuning["varied"]) == {"ddnn_T=1", "ddnn_T=4"} and len(ddnn_tuning) == 6
    means = ddnn_tuning.groupby("varied")["val_loss"].mean()
    chosen = ddnn_tuning.loc[ddnn_tuning["stop_reason"].fillna("").str.startswith("chosen"), "varied"].unique()
    assert list(chosen) == [means.idxmin()]
    # the comparison chapter: students, the paper's planting and every method in one table
    table = pb.comparison.comparison_table(pb.comparison.comparison_rows(pb.RunFolder(out)))
    assert {"student CE", "student KD", "planting", "pruning", "projection", "ddnn"} <= set(table["method"])
    cost = pb.compute_time(out).set_index("stage")
    for method in ("pruning", "projection", "ddnn"):
        assert cost.loc[f"{method} (every network tried)", "seconds"] > 0
