"""Rewrite every notebook's `parameters` cell from the parameter table (planting_core.book.params): same names, the
table's defaults and meanings. tests/test_notebooks.py checks that the cells agree with the table.

    python -m tools.sync_params
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

from planting_core.book.params import PARAMS
from tools.batch import NOTEBOOK_DIR, notebooks, write_notebook


def parameter_line(name: str) -> str:
    """`name = default  # meaning`, the default written as a Python literal."""
    value = PARAMS[name].default
    literal = json.dumps(value) if isinstance(value, str) else repr(value)
    return f"{name} = {literal}  # {PARAMS[name].meaning}"


def parameters_cell(path: Path) -> tuple[dict, list[str]]:
    """The notebook (as JSON) and the names its parameters cell assigns, in order."""
    nb = json.loads(path.read_text())
    cell = next(c for c in nb["cells"] if "parameters" in c.get("metadata", {}).get("tags", []))
    names = [line.split("=", 1)[0].strip() for line in "".join(cell["source"]).splitlines() if "=" in line]
    return nb, names


def expected_source(names: list[str]) -> str:
    """The parameters cell the table asks for."""
    return "\n".join(parameter_line(n) for n in names)


def main() -> int:
    for path in notebooks(NOTEBOOK_DIR):
        nb, names = parameters_cell(path)
        unknown = [n for n in names if n not in PARAMS]
        if unknown:
            print(f"{path.name}: parameters not in the table: {unknown}", file=sys.stderr)
            return 2
        cell = next(c for c in nb["cells"] if "parameters" in c.get("metadata", {}).get("tags", []))
        cell["source"] = expected_source(names)
        write_notebook(path, nb)
    return 0


if __name__ == "__main__":
    sys.exit(main())
