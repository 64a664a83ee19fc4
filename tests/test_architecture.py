"""The library's shape: no repository paths, no import cycles, and it works installed outside the repository."""
import ast
import re
import os
import subprocess
import sys
import venv
from pathlib import Path

import pandas as pd
import pytest

import planting_core as pc
from planting_core import book as pb

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "planting_core"


ENTRY_POINTS = {"__main__", "bench"}  # the package's command-line doors: they hand over to planting_core.book


def module_name(path: Path) -> str:
    """'search', 'book.study', 'speed.fused' for a file of the package."""
    return ".".join(path.relative_to(PACKAGE).with_suffix("").parts)


def test_the_library_knows_no_repository_layout():
    for path in PACKAGE.rglob("*.py"):
        text = path.read_text()
        for marker in ("parents[1]", "notebooks/", "results/", "_toc.yml", "benchmarks/"):
            assert marker not in text, f"{path.name} refers to the repository ({marker!r})"


def imports_of(path: Path) -> set[str]:
    """Modules of planting_core that a module imports, at any depth of its code (local imports too), as dotted names
    within the package ('checkpoint', 'book.study', 'speed'); those under `if TYPE_CHECKING:` (annotations only,
    never run) are left out."""
    here = module_name(path).split(".")[:-1]  # the module's subpackage, e.g. ['book']
    found = set()
    tree = ast.parse(path.read_text())
    typing_only = {id(n) for block in ast.walk(tree) if isinstance(block, ast.If)
                   and isinstance(block.test, ast.Name) and block.test.id == "TYPE_CHECKING"
                   for stmt in block.body for n in ast.walk(stmt)}
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = here[:len(here) - (node.level - 1)]
            elif node.module and node.module.startswith("planting_core"):
                base, node_module = [], node.module.split(".", 1)[1] if "." in node.module else ""
                found.update(".".join(filter(None, [node_module, a.name])) for a in node.names) if not node_module \
                    else found.add(node_module)
                continue
            else:
                continue
            if node.module and ".".join(base + [node.module]) in ("book", "speed"):  # from .speed import fused
                found.update(".".join(base + [node.module, a.name]) for a in node.names)
            elif node.module:
                found.add(".".join(base + [node.module]))
            else:
                found.update(".".join(base + [a.name]) for a in node.names)
    return {m for m in found if m and not m.endswith("__init__")}


def library_modules() -> list[Path]:
    """The library a user imports: the package's own modules and its speed paths, not the book's apparatus."""
    return [p for p in PACKAGE.rglob("*.py") if not module_name(p).startswith("book")
            and module_name(p) not in ENTRY_POINTS]


def test_the_import_graph_has_no_cycle():
    graph = {module_name(p): {m for m in imports_of(p) if not m.endswith("__init__")}
             for p in PACKAGE.rglob("*.py") if p.stem not in ("__init__", "__main__")}
    state: dict[str, str] = {}

    def visit(node: str, path: list[str]) -> None:
        state[node] = "open"
        for nxt in sorted(graph.get(node, ())):
            assert state.get(nxt) != "open", f"import cycle: {' -> '.join(path + [node, nxt])}"
            if nxt not in state:
                visit(nxt, path + [node])
        state[node] = "done"
    for node in sorted(graph):
        if node not in state:
            visit(node, [])
    assert "device" in graph["data"] and "train" not in graph["data"]  # the cycle data <-> train is gone


def test_the_library_never_imports_the_books_apparatus():
    for path in library_modules():
        book = sorted(m for m in imports_of(path) if m == "book" or m.startswith("book."))
        assert not book, f"{module_name(path)} imports the book's apparatus: {book}"


def test_importing_the_library_loads_no_plotting_and_no_pandas_and_exports_only_the_library():
    code = ("import planting_core, sys; print(sorted(m for m in sys.modules if m.split('.')[0] in "
            "('matplotlib', 'seaborn', 'pandas')))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert proc.stdout.strip() == "[]"
    assert len(pc.__all__) <= 25 and dir(pc) == sorted(pc.__all__)
    from planting_core import book as pb
    assert "RunFolder" not in pc.__all__ and pb.RunFolder is pb.RunFolder  # the book's notebooks still reach it


def test_the_library_owns_its_defaults_and_the_books_table_agrees():
    from dataclasses import fields
    from planting_core import search
    from planting_core.book.params import DEFAULTS
    for config in (pc.TrainConfig(), pc.GrowConfig()):
        for f in fields(config):
            if f.name in DEFAULTS and f.name not in ("seed", "train"):
                assert getattr(config, f.name) == DEFAULTS[f.name], f.name
    assert (search.PLANT_EPOCHS, search.PLANT_LR) == (DEFAULTS["plant_epochs"], DEFAULTS["plant_lr"])
    assert pc.GrowConfig().train.epochs == DEFAULTS["plant_epochs"]


def test_fit_knows_nothing_of_planting():
    text = (PACKAGE / "train.py").read_text()
    assert "planting" not in imports_of(PACKAGE / "train.py") and "planted_layer" not in text


def test_no_library_function_is_longer_than_sixty_lines():
    long = [f"{module_name(p)}.{n.name} ({n.end_lineno - n.lineno + 1} lines)" for p in library_modules()
            for n in ast.walk(ast.parse(p.read_text())) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))
            and n.end_lineno - n.lineno + 1 > 60]
    assert not long, long


def test_the_search_loop_branches_on_no_study_switch():
    """finetune_old, finetune_head and stop_split reach the search only as policies (policies.py); what a saved
    run records is decided in records.py alone."""
    search = (PACKAGE / "search.py").read_text().split("def settings_record")[-1].split("def check(self)")[-1]
    after_config = search.split("class GrowResult")[1]  # everything but GrowConfig's fields and check()
    assert not re.search(r"\.(finetune_old|finetune_head|stop_split)\b", after_config), "search branches on a switch"
    homes = {module_name(p) for p in PACKAGE.rglob("*.py")
             if re.search(r"^(TRAIN_SPEED|GROW_SPEED|GROW_LATER|\w*SPEED_FIELDS|LATER_FIELDS)\b", p.read_text(), re.M)}
    assert homes == {"records"}, homes


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """A fresh virtual environment (reusing this one's torch) with `pip install .` of this repository."""
    env = tmp_path_factory.mktemp("venv")
    venv.EnvBuilder(system_site_packages=True, with_pip=False).create(env)  # this pip and setuptools (>= 77:
    # SPDX license), seen through the system site-packages; the venv's own would be ensurepip's older setuptools
    python = env / "bin" / "python"
    proc = subprocess.run([str(python), "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", str(ROOT)],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return python


def run_outside(python: Path, cwd: Path, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return subprocess.run([str(python), *args], capture_output=True, text=True, cwd=cwd, env=env, timeout=600)


def test_installed_package_works_from_an_empty_folder(installed, tmp_path):
    where = run_outside(installed, tmp_path, "-c", "import planting_core, sys; print(planting_core.__file__)")
    assert where.returncode == 0 and str(ROOT) not in where.stdout, where.stdout + where.stderr
    for module in ("planting_core", "planting_core.bench"):
        proc = run_outside(installed, tmp_path, "-m", module, "--help")
        assert proc.returncode == 0 and "usage:" in proc.stdout, proc.stderr[-2000:]
    job = run_outside(installed, tmp_path, "-m", "planting_core", "--subset", "256", "--val-size", "64",
                      "--teacher-width", "4", "--teacher-epochs", "1", "--epochs", "1", "--widths", "2,2,2,2,2",
                      "--plant-epochs", "1", "--max-rounds", "1", "--channels", "2", "--no-progress",
                      "--device", "cpu", "--out", "run")
    assert job.returncode == 0, job.stdout[-2000:] + job.stderr[-3000:]
    folder = pb.RunFolder(tmp_path / "run")
    for path in (folder.teacher, folder.initial(0), folder.planted(folder.planting(0)),
                 folder.history(folder.planting(0)), folder.root / "summary.json"):
        assert path.exists(), path
    cost = pb.compute_time(folder.root).set_index("stage")  # the main job's folder has the notebooks' layout
    assert cost.loc["initial networks", "runs"] == 1 and cost.loc["planting (every candidate)", "runs"] == 5
    assert len(pd.read_csv(folder.history(folder.planting(0)))) == 6


def test_an_old_torch_is_refused_at_import_with_one_line():
    from planting_core.floor import check_torch
    check_torch("2.6.0+cpu")  # the floor itself is fine
    with pytest.raises(ImportError, match=r"needs torch 2\.6 or newer .* this is torch 2\.5\.1\+cu121"):
        check_torch("2.5.1+cu121")


def test_the_package_metadata_has_one_version_a_license_file_and_its_citation():
    text = (ROOT / "pyproject.toml").read_text()
    assert 'license = "MIT"' in text and 'license-files = ["LICENSE"]' in text and 'dynamic = ["version"]' in text
    assert (ROOT / "LICENSE").read_text().startswith("MIT License")
    assert "Channel Planting for Deep Neural Networks" in (ROOT / "CITATION.cff").read_text()
    readme = (ROOT / "README.md").read_text()
    assert readme.index("## Install") < readme.index("## Quickstart") < readme.index("## Build the book")


def test_no_code_reaches_a_name_the_library_does_not_export():
    """pc.<name> for a name pc does not export fails at run time (pc forwards nothing): the package, tools, tests
    and notebooks use pb.<name> for the apparatus and pc.<module>.<name> for the rest."""
    import json
    import types
    allowed = set(pc.__all__) | {n for n, v in vars(pc).items() if isinstance(v, types.ModuleType)} | {
        "__all__", "__version__", "book", "speed"}
    texts = {p: p.read_text() for d in ("planting_core", "tools", "tests") for p in (ROOT / d).rglob("*.py")}
    texts.update({p: "\n".join("".join(c["source"]) for c in json.loads(p.read_text())["cells"])
                  for p in (ROOT / "notebooks").glob("*.ipynb")})
    bad = {str(p.relative_to(ROOT)): sorted(names) for p, t in texts.items()
           if (names := {n for n in re.findall(r"\bpc\.([A-Za-z_]\w*)", t) if n not in allowed})}
    assert not bad, bad
