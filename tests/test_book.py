"""The book: committed notebooks are executed and fresh, the -W build succeeds, and a browser sees the results."""
import json
import re
import shutil
from pathlib import Path

import pandas as pd
import pytest

from tools.batch import executed_with, source_hash
from tools.book import BOOK_RUNS, ROOT, book_notebooks, build, linked_across_runs


def executed_notebooks():
    return [ROOT / "results" / run / "notebooks" / name for run in BOOK_RUNS for name in book_notebooks(run)]


@pytest.mark.parametrize("path", executed_notebooks(), ids=lambda p: f"{p.parents[1].name}/{p.name}")
def test_book_notebooks_are_executed_and_fresh(path):
    assert path.exists(), f"{path} is missing: run `python -m tools.book`"
    nb = json.loads(path.read_text())
    meta = executed_with(path)
    assert meta.get("source_hash") == source_hash(ROOT / "notebooks" / path.name, meta.get("parameters", {})), \
        f"{path.name} is stale: its source notebook changed; run `python -m tools.book`"
    outputs = [o for c in nb["cells"] if c["cell_type"] == "code" for o in c.get("outputs", [])]
    assert outputs and not any(o["output_type"] == "error" for o in outputs)


@pytest.fixture(scope="session")
def html(tmp_path_factory) -> Path:
    return build(strict=True, out=tmp_path_factory.mktemp("book"))


def test_strict_build_has_every_chapter(html):
    for page in ("index.html", "book/method/algorithm.html", "results/fashion-mnist-5k/notebooks/03_planting.html",
                 "book/reference/api.html", "book/reference/bibliography.html", "genindex.html"):
        assert (html / page).exists(), page
    api = (html / "book/reference/api.html").read_text()
    assert "plant" in api and "Return a copy of" in api  # docstrings rendered


@pytest.fixture(scope="session")
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if not (chromium and driver):
        pytest.fail("chromium and chromedriver are needed (apt-get install chromium chromium-driver)")
    opts = webdriver.ChromeOptions()
    opts.binary_location = chromium
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic",
                 "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync"):
        opts.add_argument(flag)
    b = webdriver.Chrome(service=Service(driver), options=opts)
    yield b
    b.quit()


@pytest.mark.parametrize("run", list(BOOK_RUNS))
def test_planting_chapter_shows_figures_and_glued_numbers(html, browser, run):
    browser.get((html / f"results/{run}/notebooks/03_planting.html").as_uri())
    images = browser.execute_script(
        "return Array.from(document.querySelectorAll('article img')).map(i => [i.complete, i.naturalWidth]);")
    drawn = [w for ok, w in images if ok and w > 100]
    assert len(drawn) >= 3, images  # search, widths, accuracy against parameters
    pasted = browser.execute_script(
        "return Array.from(document.querySelectorAll('.pasted-text')).map(e => e.textContent);")
    summary = pd.read_csv(ROOT / f"results/{run}/summary.csv")
    planted = summary.loc[summary["model"] == "planted", "test_acc"].mean()
    teacher = summary.loc[summary["model"] == "teacher", "test_acc"].mean()
    assert f"{planted:.2%}" in pasted and f"{teacher:.2%}" in pasted, pasted
    body = browser.find_element("tag name", "body").text
    assert f"{planted:.2%}" in body


@pytest.mark.parametrize("run", list(BOOK_RUNS))
def test_summary_has_every_network_and_seed(run):
    summary = pd.read_csv(ROOT / f"results/{run}/summary.csv")
    assert list(summary.columns) == ["model", "widths", "params", "loss_fn", "seed", "test_acc", "test_loss"]
    assert set(summary["model"]) == {"teacher", "student", "initial", "planted"}
    assert summary["test_acc"].between(0, 1).all() and (summary["test_loss"] > 0).all()
    for model in ("initial", "planted"):
        assert sorted(summary.loc[summary["model"] == model, "seed"]) == [0, 1, 2], model
    per_net = summary[summary["model"] == "student"].groupby(["widths", "loss_fn"])["seed"].nunique()
    assert set(per_net.index.get_level_values("loss_fn")) == {"ce", "kd"}
    assert (per_net[per_net.index.get_level_values("widths") == "[8, 8, 8, 8, 8]"] == 3).all()


def test_readme_results_match_the_summaries():
    from tools.book import README, RESULTS_END, RESULTS_START, results_markdown
    block = README.read_text().split(RESULTS_START, 1)[1].split(RESULTS_END, 1)[0]
    assert block.strip() == results_markdown().strip(), \
        "README's results are stale: run `python -m tools.book` (it rewrites them from summary.csv)"
    for run in BOOK_RUNS:
        assert f"results/{run}/summary.csv" in block


def test_every_repository_address_comes_from_the_config():
    import re

    from tools.batch import notebooks
    from tools.sync_links import colab_link, pages, raw_base, repository
    url, _ = repository()
    named = re.compile(r"(?:git\+|git clone )(https://github\.com/[\w.-]+/[\w-]+)")
    raw = re.compile(r"https://raw\.githubusercontent\.com/[\w.-]+/[\w.-]+/[\w.-]+/")
    for path in notebooks() + pages():
        text = path.read_text()
        assert all(found == url for found in named.findall(text)), f"{path}: run `python -m tools.sync_links`"
        assert all(found == raw_base() for found in raw.findall(text)), f"{path}: run `python -m tools.sync_links`"
        if path.suffix == ".ipynb":
            links = re.findall(r"https://colab\.research\.google\.com/github/[^\s)\"]+", text)
            assert links == [colab_link(path.name)], f"{path}: run `python -m tools.sync_links`"


@pytest.mark.parametrize("page", ["book/method/distillation.html", "book/method/algorithm.html",
                                  "results/fashion-mnist-5k/notebooks/00_planting_by_hand.html"])
def test_maths_renders_offline_and_exercises_fold(html, browser, page):
    browser.get((html / page).as_uri())
    browser.implicitly_wait(2)
    scripts = browser.execute_script("return Array.from(document.scripts).map(s => s.src);")
    assert not any("cdn" in s or "jsdelivr" in s for s in scripts), scripts  # MathJax comes with the book
    browser.execute_script("return window.MathJax && MathJax.startup && MathJax.startup.promise;")
    text = browser.find_element("tag name", "article").text
    assert "\\(" not in text and "$$" not in text, "raw TeX on the page: MathJax did not run"
    if page.endswith("00_planting_by_hand.html"):
        assert "losses agree (every step): True" in text
    exercises = browser.find_elements("css selector", "div.exercise")
    solutions = browser.find_elements("css selector", "details.solution, div.solution.dropdown")
    assert exercises and len(solutions) == len(exercises), (len(exercises), len(solutions))


def test_at_least_fifteen_exercises(html):
    count = sum(p.read_text().count('class="exercise admonition') for p in html.rglob("*.html"))
    assert count >= 15, count


def test_the_lab_settings_are_the_quick_profile():
    from planting_core.book.params import PROFILES
    text = (ROOT / "book" / "teaching" / "lab.md").read_text()
    block = text.split("```python\n", 1)[1].split("```", 1)[0]
    values: dict = {}
    exec(block, {}, values)
    assert values == PROFILES["quick"], "book/teaching/lab.md: copy pb.PROFILES['quick'] into the settings block"
    timings = pd.read_csv(ROOT / "book" / "teaching" / "lab-timings-cpu.csv")
    assert {"00_planting_by_hand", "01_teacher", "02_baselines", "03_planting"} <= set(timings["notebook"])


def test_the_full_data_page_gives_the_books_batch_command():
    import argparse
    import shlex

    from tools.batch import parse_set
    text = (ROOT / "book" / "reproduce-full.md").read_text()
    command = shlex.split(text.split("```bash\n", 1)[1].split("```", 1)[0].replace("\\\n", " "))
    ap = argparse.ArgumentParser()
    for flag in ("--dataset", "--profile", "--out"):
        ap.add_argument(flag)
    for flag in ("--only", "--set"):
        ap.add_argument(flag, action="append", default=[])
    args = ap.parse_args(command[3:])  # after python -m tools.batch
    dataset, profile, sets, only = BOOK_RUNS["fashion-mnist-full"]
    assert command[:3] == ["python", "-m", "tools.batch"] and args.out == "results/fashion-mnist-full"
    assert (args.dataset, args.profile, args.only) == (dataset, profile, only), "book/reproduce-full.md: --only"
    assert parse_set(args.set) == sets, "book/reproduce-full.md: copy tools.book.BOOK_RUNS' --set values"


def test_the_intros_example_grows_the_network():
    import torch
    code = (ROOT / "book" / "intro.md").read_text().split("```python\n", 1)[1].split("```", 1)[0]
    assert "subset=5000" in code and "pc.GrowConfig(channels=4)" in code, "the intro's example changed: update this test"
    code = code.replace("subset=5000", "subset=1000").replace("pc.GrowConfig(channels=4)",
                                                                 "pc.GrowConfig(channels=4, max_rounds=1)")
    torch.manual_seed(0)
    scope: dict = {}
    exec(code, scope)  # as printed, on 1,000 images and for one round
    result = scope["result"]
    assert result.model.widths != [8] * 5, result.stop_reason
    assert result.history["chosen"].sum() == 2  # the initial network and one planted candidate


def test_every_page_title_is_unique_and_shows_its_own_parameters():
    titles = []
    for path in executed_notebooks():
        cells = json.loads(path.read_text())["cells"]
        titles.append("".join(cells[0]["source"]).splitlines()[0])
        defaults = next(c for c in cells if "parameters" in c["metadata"].get("tags", []))
        assert "hide-cell" in defaults["metadata"]["tags"], f"{path}: run `python -m tools.book`"
    assert len(set(titles)) == len(titles), titles


def test_a_second_runs_copy_of_a_page_owns_its_labels_and_links_to_chapters_it_lacks():
    first, second = "fashion-mnist-5k", "fashion-mnist-1k"  # the 1k run shows 06 but not 04
    text = ":label: ex-study-size\n{solution} ex-study-size\nsee {doc}`04_ablations` and {doc}`03_planting`"
    mine = linked_across_runs(text, second, "06_study.ipynb")
    assert ":label: ex-study-size-fashion-mnist-1k" in mine and "{solution} ex-study-size-fashion-mnist-1k" in mine
    assert "{doc}`/results/fashion-mnist-5k/notebooks/04_ablations`" in mine and "{doc}`03_planting`" in mine
    assert linked_across_runs(mine, second, "06_study.ipynb") == mine  # presenting twice changes nothing more
    assert linked_across_runs(text, first, "06_study.ipynb") == text  # the first run's copy keeps its own


def book_pages(html: Path) -> list[Path]:
    """Every page the table of contents lists, as built HTML."""
    import yaml
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    files = [toc["root"]] + [c["file"] for part in toc["parts"] for c in part["chapters"]] + \
        [s["file"] for part in toc["parts"] for c in part["chapters"] for s in c.get("sections", [])]
    return [html / f"{f}.html" for f in files]


def test_every_page_loads_its_figures_and_shows_whole_tables(html, browser):
    import re
    pages = book_pages(html)
    assert len(pages) >= 20 and all(p.exists() for p in pages), [p for p in pages if not p.exists()]
    for page in pages:
        browser.get(page.as_uri())
        local_images = browser.execute_script(  # remote images (the Colab badge) need the internet; skip them
            "return Array.from(document.querySelectorAll('article img')).filter(i => !i.src.startsWith('http'))"
            ".map(i => [i.src, i.complete && i.naturalWidth > 0]);")
        assert all(ok for _, ok in local_images), (page.name, [s for s, ok in local_images if not ok])
        text = browser.find_element("tag name", "article").text
        assert not re.search(r"\d+ rows [×x] \d+ columns", text), f"{page}: pandas cut a table short"
        assert "Traceback" not in text, f"{page}: an error is shown"


def test_every_command_in_a_readme_or_page_exists():
    """`python -m X` in the README, a run folder's README or a book page names a module that runs (a package
    runs only with a __main__)."""
    import importlib.util

    def runs(module: str) -> bool:
        spec = importlib.util.find_spec(module)
        return spec is not None and (spec.submodule_search_locations is None
                                     or importlib.util.find_spec(f"{module}.__main__") is not None)
    texts = [ROOT / "README.md", *ROOT.glob("results/*/README.md"), *(ROOT / "book").rglob("*.md")]
    named = {m for path in texts for m in re.findall(r"python3? -m ([A-Za-z_][\w.]*)", path.read_text())}
    assert "tools.batch" in named
    missing = sorted(m for m in named if m != "pytest" and not runs(m))
    assert not missing, f"commands naming no module: {missing}"
