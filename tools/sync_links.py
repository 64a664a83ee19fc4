"""Point every Colab badge, install cell and clone command at the repository named in _config.yml.

    python -m tools.sync_links

The repository's address has one home, `repository.url` (and `branch`) in _config.yml; this tool rewrites the
source notebooks and the book's pages from it, and tests/test_book.py checks that they agree.
"""
from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import yaml

from tools.batch import NOTEBOOK_DIR, notebooks, write_notebook

ROOT = Path(__file__).resolve().parents[1]
# the places that name the repository: pip's git+ address, git clone, and Colab's github/ path
INSTALL_OR_CLONE = re.compile(r"(git\+|git clone )https://github\.com/[\w.-]+/[\w-]+(?:\.[\w-]+)*?(?=\.git\b|[^\w./-]|$)")
COLAB = re.compile(r"https://colab\.research\.google\.com/github/[\w.-]+/[\w.-]+/blob/[\w.-]+/notebooks/[\w.-]+\.ipynb")
RAW = re.compile(r"https://raw\.githubusercontent\.com/[\w.-]+/[\w.-]+/[\w.-]+/")
CLONE_DIR = re.compile(r"(git clone \S+ && cd )[\w.-]+")


def repository() -> tuple[str, str]:
    """(url, branch) of the book's repository, from _config.yml."""
    repo = yaml.safe_load((ROOT / "_config.yml").read_text())["repository"]
    return repo["url"].rstrip("/"), repo.get("branch", "main")


def colab_link(notebook: str) -> str:
    """The Colab address that opens a source notebook (e.g. "01_teacher.ipynb") from the repository."""
    url, branch = repository()
    return f"https://colab.research.google.com/github/{url.removeprefix('https://github.com/')}/blob/{branch}/" \
           f"notebooks/{notebook}"


def raw_base() -> str:
    """The address under which the repository's files are served raw (checkpoint_url starts with it)."""
    url, branch = repository()
    return f"https://raw.githubusercontent.com/{url.removeprefix('https://github.com/')}/{branch}/"


def rewrite(text: str, notebook: str | None = None) -> str:
    """`text` with every repository address (and, in a notebook, its Colab link) made the configured one."""
    url, _ = repository()
    text = INSTALL_OR_CLONE.sub(lambda m: m.group(1) + url, text)
    text = CLONE_DIR.sub(lambda m: m.group(1) + url.rsplit("/", 1)[1], text)
    text = RAW.sub(raw_base(), text)
    if notebook:
        text = COLAB.sub(colab_link(notebook), text)
    return text


def pages() -> list[Path]:
    """The book's Markdown pages and the README, which may name the repository."""
    return sorted((ROOT / "book").rglob("*.md")) + [ROOT / "README.md"]


def main() -> int:
    for path in notebooks(NOTEBOOK_DIR):
        nb = json.loads(path.read_text())
        for cell in nb["cells"]:
            src = cell["source"]
            cell["source"] = [rewrite(s, path.name) for s in src] if isinstance(src, list) else rewrite(src, path.name)
        write_notebook(path, nb)
    for path in pages():
        path.write_text(rewrite(path.read_text()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
