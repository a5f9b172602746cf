"""The first cell of every chapter notebook: on Colab, Binder or a JupyterHub, where the package is not installed,
it installs ``companion`` from the repository named in ``_config.yml`` (``repository.url`` and ``branch``); in a
checkout where ``companion`` already imports it does nothing.

The repository is set once, in ``_config.yml``; ``companion launch-cell`` rewrites the notebooks' first cells from
it (``--check`` only reports notebooks that disagree, and the book build refuses to start while any does).
"""
from __future__ import annotations

import json
from pathlib import Path

import yaml

MARKER = "# companion launch cell"
TAGS = ["hide-cell", "launch"]


def repository_setting(repo: Path) -> tuple[str, str]:
    """(url, branch) of ``repository`` in ``repo/_config.yml``; a missing url is an error that says where to set it."""
    cfg = yaml.safe_load((repo / "_config.yml").read_text()) or {}
    section = cfg.get("repository") or {}
    url = str(section.get("url") or "").rstrip("/")
    if not url.startswith("https://"):
        raise ValueError(f"_config.yml: repository.url must be the https URL of the book's repository, got {url!r}")
    return url, str(section.get("branch") or "main")


def cell_source(url: str, branch: str) -> str:
    return f'''{MARKER} (generated from _config.yml's repository setting by `companion launch-cell`).
# Where `companion` is not installed (Colab, Binder, a JupyterHub), install it; in a checkout it does nothing.
import importlib.util, pathlib
if importlib.util.find_spec("companion") is None:
    _root = next((p for p in (pathlib.Path.cwd(), *pathlib.Path.cwd().parents)
                  if (p / "src" / "companion").is_dir() and (p / "pyproject.toml").is_file()), None)
    _target = str(_root) if _root else "companion @ git+{url}@{branch}"
    %pip install --quiet "$_target"
'''


def _lines(text: str) -> list[str]:
    return text.splitlines(keepends=True)


def cell(url: str, branch: str) -> dict:
    return {"cell_type": "code", "execution_count": None, "metadata": {"tags": list(TAGS)}, "outputs": [],
            "source": _lines(cell_source(url, branch))}


def notebooks(repo: Path) -> list[Path]:
    return sorted((repo / "notebooks").glob("*.ipynb"))


def sync(repo: Path, *, write: bool) -> list[Path]:
    """Notebooks whose first code cell is not the launch cell for the configured repository; with ``write`` the
    cell is replaced (or inserted before the first code cell). Returns the notebooks that differed."""
    url, branch = repository_setting(repo)
    want = cell(url, branch)
    stale = []
    for path in notebooks(repo):
        nb = json.loads(path.read_text())
        first = next((i for i, c in enumerate(nb["cells"]) if c["cell_type"] == "code"), len(nb["cells"]))
        current = nb["cells"][first] if first < len(nb["cells"]) else None
        is_launch = current is not None and "".join(current["source"]).startswith(MARKER)
        if is_launch and "".join(current["source"]) == "".join(want["source"]) \
                and current.get("metadata", {}).get("tags") == TAGS:
            continue
        stale.append(path)
        if write:
            if is_launch:
                nb["cells"][first] = {**want, **({"id": current["id"]} if "id" in current else {})}
            else:
                nb["cells"].insert(first, {**want, **({"id": "launch"} if nb.get("nbformat_minor", 0) >= 5
                                                      else {})})
            path.write_text(json.dumps(nb, indent=1, ensure_ascii=False) + "\n")
    return stale
