"""A small Sphinx extension of the book (listed in _config.yml): pages that work offline and log no errors.

Thebe is off (the launch buttons open Colab, Binder or a JupyterHub instead), yet Jupyter Book 1 always loads
sphinx-thebe, whose inline configuration names a CDN URL and is added twice, so that the second copy's ``const``
fails with a SyntaxError on every page. Its configuration, script and stylesheet are left out of the pages, and any
other script added twice is kept once.  It also adds the book's small stylesheet (``companion/static/companion.css``:
long URLs, commits and checksums wrap inside the text column, so no page scrolls sideways on a phone).
"""
from __future__ import annotations


def _name(asset) -> str:
    return str(getattr(asset, "filename", None) or asset or "")


def _prune_assets(app, pagename, templatename, context, doctree) -> None:
    scripts = context.get("script_files")
    if scripts is not None:
        seen, keep = set(), []
        for js in scripts:
            body = getattr(js, "attributes", {}).get("body", "") or ""
            if "THEBE_JS_URL" in body or "sphinx-thebe" in _name(js):
                continue
            key = (_name(js), body)
            if key not in seen:
                seen.add(key)
                keep.append(js)
        scripts[:] = keep
    css = context.get("css_files")
    if css is not None:
        css[:] = [c for c in css if "sphinx-thebe" not in _name(c)]


def _add_static(app) -> None:
    from pathlib import Path

    app.config.html_static_path.append(str(Path(__file__).with_name("static")))


def setup(app):
    app.connect("builder-inited", _add_static)
    app.add_css_file("companion.css")
    app.connect("html-page-context", _prune_assets, priority=900)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
