"""A Sphinx extension: each page's scripts once. sphinx-thebe adds its configuration script (`const THEBE_JS_URL =
...`) twice under Jupyter Book 1.x, and the second copy is a console error on every page."""
from __future__ import annotations


def dedupe(app, pagename, templatename, context, doctree) -> None:
    """Keep the first of any scripts with the same file and body (an inline script's file is None or "")."""
    seen, kept = set(), []
    for script in context.get("script_files", []):
        key = (getattr(script, "filename", None) or "", getattr(script, "attributes", {}).get("body", ""))
        if key not in seen:
            seen.add(key)
            kept.append(script)
    context["script_files"] = kept


def setup(app) -> dict:
    """Register the page hook (runs after every extension has added its scripts)."""
    app.connect("html-page-context", dedupe, priority=900)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
