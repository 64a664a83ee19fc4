"""The book: committed notebooks are executed and fresh, the -W build succeeds, and a browser sees the results."""
import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

from planting_core.batch import executed_with, source_hash
from planting_core.book import BOOK_RUNS, ROOT, build


def book_notebooks():
    return sorted((ROOT / "results" / run / "notebooks" / nb.name for run in BOOK_RUNS
                   for nb in (ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb")), key=str)


@pytest.mark.parametrize("path", book_notebooks(), ids=lambda p: f"{p.parents[1].name}/{p.name}")
def test_book_notebooks_are_executed_and_fresh(path):
    assert path.exists(), f"{path} is missing: run `python -m planting_core.book`"
    nb = json.loads(path.read_text())
    meta = executed_with(path)
    assert meta.get("source_hash") == source_hash(ROOT / "notebooks" / path.name, meta.get("parameters", {})), \
        f"{path.name} is stale: its source notebook changed; run `python -m planting_core.book`"
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


def test_planting_chapter_shows_figures_and_glued_numbers(html, browser):
    browser.get((html / "results/fashion-mnist-5k/notebooks/03_planting.html").as_uri())
    images = browser.execute_script(
        "return Array.from(document.querySelectorAll('article img')).map(i => [i.complete, i.naturalWidth]);")
    drawn = [w for ok, w in images if ok and w > 100]
    assert len(drawn) >= 3, images  # search, widths, accuracy against parameters
    pasted = browser.execute_script(
        "return Array.from(document.querySelectorAll('.pasted-text')).map(e => e.textContent);")
    summary = pd.read_csv(ROOT / "results/fashion-mnist-5k/summary.csv")
    planted = summary.loc[summary["model"] == "planted", "test_acc"].mean()
    teacher = summary.loc[summary["model"] == "teacher", "test_acc"].mean()
    assert f"{planted:.2%}" in pasted and f"{teacher:.2%}" in pasted, pasted
    body = browser.find_element("tag name", "body").text
    assert f"{planted:.2%}" in body
