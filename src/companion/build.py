"""Build the book: execute every chapter notebook with papermill at one scale, generate the data and report pages,
then run Jupyter Book 1.x on a staging copy so that executed notebooks never land in the sources.

    _build/stage/            staging copy: _config.yml, _toc.yml, book/, executed notebooks/
    _build/executed-cache/   <chapter>-<scale>.ipynb and .json: an executed notebook and the key of what it
                             depended on; reused while the key and the results folder still match
    _build/html/             the rendered book
    results/<chapter>/<scale>/   what each chapter wrote (results contract)
"""
from __future__ import annotations

import ast
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

from . import launch
from .data.manifests import load_manifests
from .results import atomic_write_bytes, report_markdown, results_root
from .scales import get_scale

REPO = Path(__file__).resolve().parents[2]

# chapter id -> notebook (relative to the repo).  The book's order is _toc.yml's.
CHAPTERS: dict[str, str] = {
    "vessel_data": "notebooks/00_vessel_data.ipynb",
    "vaesselsparse": "notebooks/01_vaesselsparse.ipynb",
    "vaesselsparse_latent": "notebooks/01b_vaesselsparse_latent.ipynb",
    "vpbsd": "notebooks/02_vpbsd.ipynb",
    "hyperbolic": "notebooks/03_hyperbolic.ipynb",
    "sparsevm": "notebooks/04_sparsevm.ipynb",
}

ACCESS_TEXT = {"open": "open download", "registration": "registration", "request": "on request",
               "private": "private", "unidentified": "not identified"}


def execute_chapter(chapter: str, scale: str, out_path: Path, *, results: Path, parameters: dict | None = None,
                    log_output: bool = False) -> float:
    """Execute one chapter notebook at `scale` into `out_path`; returns wall seconds."""
    import papermill

    if chapter not in CHAPTERS:
        raise ValueError(f"unknown chapter {chapter!r}; chapters: {', '.join(CHAPTERS)}")
    get_scale(scale)
    # the results folder as the notebook sees it (it runs in the repository root): relative where possible, so that
    # the executed notebook and the page built from it carry no path of the build machine
    out = results.resolve()
    params = {"scale": scale, "output_dir": str(out.relative_to(REPO)) if out.is_relative_to(REPO) else str(out),
              **(parameters or {})}
    out_path.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    # progress bars are for people running a notebook; in the executed copy that becomes a page they would be
    # widgets that need scripts from the network, so the kernel runs with tqdm disabled
    previous = os.environ.get("TQDM_DISABLE")
    os.environ["TQDM_DISABLE"] = "1"
    try:
        papermill.execute_notebook(str(REPO / CHAPTERS[chapter]), str(out_path), parameters=params,
                                   kernel_name="python3", cwd=str(REPO), progress_bar=False, log_output=log_output)
    finally:
        if previous is None:
            os.environ.pop("TQDM_DISABLE", None)
        else:
            os.environ["TQDM_DISABLE"] = previous
    _strip_machine_paths(out_path)
    return time.perf_counter() - t0


def _strip_machine_paths(notebook: Path) -> None:
    """papermill records the absolute input and output paths in the notebook's metadata, which the book offers
    for download: keep them relative to the repository (or just the file name)."""
    nb = json.loads(notebook.read_text())
    pm = nb.get("metadata", {}).get("papermill", {})
    for key in ("input_path", "output_path"):
        if pm.get(key):
            path = Path(pm[key]).resolve()
            pm[key] = str(path.relative_to(REPO)) if path.is_relative_to(REPO) else path.name
    atomic_write_bytes(notebook, (json.dumps(nb, indent=1, ensure_ascii=False) + "\n").encode())


ACCESS_BADGE = {"open": "success", "registration": "info", "request": "info", "private": "secondary",
                "unidentified": "secondary"}


def _plain(text: str) -> str:
    """Manifest prose as literal Markdown text: characters Markdown would read as markup (``<split>`` as HTML,
    ``LPS_*_flipped`` as emphasis) are escaped."""
    return re.sub(r"([<>*`])", r"\\\1", " ".join(text.split()))


def dataset_blocks() -> dict[str, list[str]]:
    """Each dataset of data_manifests/ as a block that wraps at any page width: title, id and an access badge on
    one line; access details, chapters, license (and the upstream file stating it), use, caveats, size, checksums,
    modality and citation folded below."""
    blocks = {}
    for m in sorted(load_manifests().values(), key=lambda m: (m.access, m.id)):
        cite = f"{{cite:p}}`{m.id}`" if m.bibtex else m.citation
        title = f"[{m.title}]({m.homepage})" if m.homepage else m.title
        access = "ships in a PyPI package" if m.is_packaged else ACCESS_TEXT[m.access]
        badge = "primary" if m.is_packaged else ACCESS_BADGE.get(m.access, "secondary")
        detail = access
        if m.access != "open" and m.downloadable:
            detail += f"; the files download directly from {', '.join(m.download_hosts)}"
        blocks[m.id] = [f"**{title}** (`{m.id}`) {{bdg-{badge}}}`{access}`", "",
                        ":::{dropdown} Access, license, size, checksums, citation",
                        f"* **Access:** {detail}",
                        f"* **Chapters:** {', '.join(m.chapters)}",
                        f"* **License:** {m.license or 'not stated'}",
                        *([f"* **License stated in:** {_plain('; '.join(m.license_stated_in))}"]
                          if m.license_stated_in else []),
                        *([f"* **Use:** {_plain(m.role)}"] if m.role else []),
                        *([f"* **Caveats:** {_plain(' '.join(m.caveats))}"] if m.caveats else []),
                        f"* **Size:** {m.size or '–'}",
                        f"* **Checksums:** {m.checksums or '–'}",
                        f"* **Modality:** {m.modality or '–'}",
                        f"* **Citation:** {cite}",
                        ":::", ""]
    return blocks


def datasets_markdown() -> str:
    """The datasets page's list, generated from data_manifests/ (no wide table: details are folded)."""
    return "\n".join(line for block in dataset_blocks().values() for line in block)


def datasets_bibtex() -> str:
    return "\n".join(m.bibtex.strip() + "\n" for m in load_manifests().values() if m.bibtex)


def stage_sources(stage: Path) -> None:
    if stage.exists():
        shutil.rmtree(stage)
    stage.mkdir(parents=True)
    for name in ("_config.yml", "_toc.yml"):
        shutil.copy2(REPO / name, stage / name)
    shutil.copytree(REPO / "book", stage / "book", ignore=shutil.ignore_patterns("_generated", "reference"))


# ----------------------------------------------------------------------------------------------- cached execution
PACKAGE = "companion"
# inputs of every chapter besides its notebook and the companion modules it imports
SHARED_INPUTS = ("requirements/lock.txt", "data_manifests")


def _module_files(repo: Path, module: str) -> list[Path]:
    """The files of `module` (a dotted name inside companion) and of the packages above it; [] if not a module."""
    parts = module.split(".")
    if parts[0] != PACKAGE:
        return []
    base = repo / "src"
    files = []
    for i in range(1, len(parts) + 1):
        d = base.joinpath(*parts[:i])
        if (d / "__init__.py").is_file():
            files.append(d / "__init__.py")
        elif d.with_suffix(".py").is_file():
            files.append(d.with_suffix(".py"))
            break
        elif not d.is_dir():  # an attribute imported from a module, not a module
            break
    return files


def _imports(tree: ast.AST, module: str, is_package: bool) -> set[str]:
    """Dotted names a module's code imports (relative imports resolved against `module`), with `from X import a`
    giving both X and X.a (a may be a submodule)."""
    names = set()
    package = module if is_package else module.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            names.add(target)
            names.update(f"{target}.{a.name}" for a in node.names)
    return names


def _notebook_code(nb: dict) -> list[str]:
    out = []
    for c in nb["cells"]:
        if c["cell_type"] != "code":
            continue
        lines = "".join(c["source"]).splitlines()
        out.append("\n".join("pass" if ln.lstrip().startswith(("%", "!")) else ln for ln in lines))
    return out


def chapter_modules(chapter: str, repo: Path = REPO) -> list[Path]:
    """The companion source files a chapter depends on: what its notebook imports, followed through the imports of
    those modules (static `import` statements, relative ones included)."""
    nb = json.loads((repo / CHAPTERS[chapter]).read_text())
    todo: list[str] = []
    for code in _notebook_code(nb):
        try:
            todo += sorted(_imports(ast.parse(code), "__main__", False))
        except SyntaxError:  # fall back to a plain reading of the import lines
            todo += re.findall(r"^\s*(?:from|import)\s+(companion[\w.]*)", code, re.M)
    seen: dict[Path, None] = {}
    done: set[str] = set()
    while todo:
        mod = todo.pop()
        if mod in done:
            continue
        done.add(mod)
        for f in _module_files(repo, mod):
            if f in seen:
                continue
            seen[f] = None
            rel = f.relative_to(repo / "src").with_suffix("")
            name = ".".join(rel.parts[:-1] if rel.name == "__init__" else rel.parts)
            todo += sorted(_imports(ast.parse(f.read_text()), name, rel.name == "__init__"))
    return sorted(seen)


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def chapter_inputs(chapter: str, scale: str, parameters: dict, repo: Path = REPO) -> dict[str, str]:
    """Everything an executed chapter depends on, as name -> sha256: its notebook's cells (sources and metadata,
    not outputs), the companion modules it imports, its claims file, the other data files of the package, the lock
    file, the dataset manifests, and the scale and parameters it runs with."""
    nb = json.loads((repo / CHAPTERS[chapter]).read_text())
    cells = [{"type": c["cell_type"], "source": "".join(c["source"]), "metadata": c.get("metadata", {})}
             for c in nb["cells"]]
    inputs = {CHAPTERS[chapter]: _sha(json.dumps(cells, sort_keys=True).encode()),
              "parameters": _sha(json.dumps({"scale": scale, **parameters}, sort_keys=True, default=str).encode())}
    files = list(chapter_modules(chapter, repo))
    pkg = repo / "src" / PACKAGE
    files += [p for p in pkg.rglob("*") if p.is_file() and p.suffix not in (".py", ".pyc")
              and "__pycache__" not in p.parts and (p.parent.name != "claims" or p.stem == chapter)]
    for name in SHARED_INPUTS:
        p = repo / name
        files += sorted(q for q in p.rglob("*") if q.is_file()) if p.is_dir() else [p]
    for f in files:
        inputs[str(f.relative_to(repo))] = _sha(f.read_bytes()) if f.exists() else "missing"
    return dict(sorted(inputs.items()))


def _folder_hashes(folder: Path) -> dict[str, str]:
    if not folder.is_dir():
        return {}
    return {str(p.relative_to(folder)): _sha(p.read_bytes()) for p in sorted(folder.rglob("*")) if p.is_file()}


def _cache_paths(cache_dir: Path, chapter: str, scale: str) -> tuple[Path, Path]:
    return cache_dir / f"{chapter}-{scale}.json", cache_dir / f"{chapter}-{scale}.ipynb"


def cached_execution(chapter: str, scale: str, inputs: dict[str, str], results_dir: Path,
                     cache_dir: Path) -> tuple[Path | None, str]:
    """The cached executed notebook if its key and the results folder still match, else (None, why not)."""
    meta_path, nb_path = _cache_paths(cache_dir, chapter, scale)
    if not (meta_path.exists() and nb_path.exists()):
        return None, "no cached execution"
    meta = json.loads(meta_path.read_text())
    changed = sorted(k for k in set(inputs) | set(meta.get("inputs", {}))
                     if inputs.get(k) != meta.get("inputs", {}).get(k))
    if changed:
        return None, "changed: " + ", ".join(changed)
    if _folder_hashes(results_dir) != meta.get("results"):
        return None, f"{results_dir.name} results folder missing or changed"
    return nb_path, "nothing it depends on changed"


def execute_chapters(scale: str, chapters: list[str], *, results: Path, stage: Path,
                     cache_dir: str | Path | None = None, force: bool = False,
                     parameters: dict | None = None, repo: Path = REPO) -> list[str]:
    """Put each chapter's executed notebook into `stage`: from the cache when nothing it depends on changed and its
    results folder is as the execution left it, else executed anew (and cached). Returns the chapters executed."""
    cache_dir = Path(cache_dir or repo / "_build" / "executed-cache")
    out_rel = Path(results).resolve()
    params = {"output_dir": str(out_rel.relative_to(repo)) if out_rel.is_relative_to(repo) else str(out_rel),
              **(parameters or {})}
    executed = []
    for ch in chapters:
        out = stage / CHAPTERS[ch]
        out.parent.mkdir(parents=True, exist_ok=True)
        inputs = chapter_inputs(ch, scale, params, repo)
        folder = Path(results) / ch / scale
        hit, why = (None, "--force") if force else cached_execution(ch, scale, inputs, folder, cache_dir)
        if hit:
            print(f"[companion] {ch}: reusing {hit.relative_to(hit.parents[1])} ({why}; --force re-executes)",
                  flush=True)
            shutil.copy2(hit, out)
            continue
        print(f"[companion] executing {CHAPTERS[ch]} at scale {scale} ({why}) ...", flush=True)
        secs = execute_chapter(ch, scale, out, results=results, parameters=parameters)
        print(f"[companion] {ch}: {secs:.0f} s", flush=True)
        executed.append(ch)
        meta_path, nb_path = _cache_paths(cache_dir, ch, scale)
        nb_path.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(out, nb_path)
        atomic_write_bytes(meta_path, json.dumps({"chapter": ch, "scale": scale, "seconds": round(secs, 1),
                                                  "inputs": inputs, "results": _folder_hashes(folder)},
                                                 indent=1).encode())
    return executed


# ----------------------------------------------------------------------------------------------- page preparation
_FENCE = re.compile(r"^(?P<fence>`{3,}|:{3,})\{(?P<name>[\w-]+)\}", re.M)


def strip_solutions_markdown(text: str) -> str:
    """`text` without sphinx-exercise solutions: ``{solution}`` blocks and everything from ``{solution-start}``
    to its ``{solution-end}`` (the end's fence included)."""
    out, pos = [], 0
    while True:
        m = next((m for m in _FENCE.finditer(text, pos) if m["name"] in ("solution", "solution-start")), None)
        if not m:
            out.append(text[pos:])
            return "".join(out)
        out.append(text[pos:m.start()])
        if m["name"] == "solution":  # up to the closing fence of the same length
            close = re.compile(rf"^{re.escape(m['fence'])}\s*$", re.M).search(text, m.end())
        else:
            end = next((e for e in _FENCE.finditer(text, m.end()) if e["name"] == "solution-end"), None)
            close = re.compile(rf"^{re.escape(end['fence'])}\s*$", re.M).search(text, end.end()) if end else None
        pos = close.end() if close else len(text)


def strip_solutions(nb: dict) -> dict:
    """A notebook without solutions: the text of ``{solution}`` blocks, every cell from a ``{solution-start}`` to
    its ``{solution-end}`` (code cells and their outputs included) and cells tagged ``solution``."""
    cells, inside = [], False
    for c in nb["cells"]:
        src = "".join(c["source"])
        if "solution" in c.get("metadata", {}).get("tags", []):
            continue
        if c["cell_type"] != "markdown":
            if not inside:
                cells.append(c)
            continue
        text, keep = src, ""
        if inside:  # drop up to the solution-end fence, keep what follows
            end = next((e for e in _FENCE.finditer(text) if e["name"] == "solution-end"), None)
            if not end:
                continue
            close = re.compile(rf"^{re.escape(end['fence'])}\s*$", re.M).search(text, end.end())
            text = text[close.end() if close else len(text):]
            inside = False
        starts = [m for m in _FENCE.finditer(text) if m["name"] == "solution-start"]
        ends = [m for m in _FENCE.finditer(text) if m["name"] == "solution-end"]
        if starts and (not ends or ends[-1].start() < starts[-1].start()):  # a solution runs into later cells
            keep, text, inside = strip_solutions_markdown(text[:starts[-1].start()]), "", True
        else:
            keep, text = strip_solutions_markdown(text), ""
        if keep.strip():
            cells.append({**c, "source": keep.splitlines(keepends=True)})
    return {**nb, "cells": cells}


def prepare_page(notebook: Path, *, student: bool = False) -> None:
    """The staged executed notebook as the book shows it: the parameter cells out of the way (the chapter's first
    cells print the parameters it ran with; papermill's injected cell stays in the downloadable notebook but is not
    shown, the defaults cell is folded), and for a student build no solutions."""
    nb = json.loads(notebook.read_text())
    for c in nb["cells"]:
        tags = c.setdefault("metadata", {}).setdefault("tags", [])
        if "injected-parameters" in tags and "remove-cell" not in tags:
            tags.append("remove-cell")
        elif "parameters" in tags and "hide-cell" not in tags:
            tags.append("hide-cell")
    if student:
        nb = strip_solutions(nb)
    atomic_write_bytes(notebook, (json.dumps(nb, indent=1, ensure_ascii=False) + "\n").encode())


def build(scale: str = "laptop", *, strict: bool = False, chapters: list[str] | None = None,
          results: str | Path | None = None, build_dir: str | Path | None = None, student: bool = False,
          force: bool = False, cache_dir: str | Path | None = None) -> Path:
    """Execute the chapters (or reuse their cached executions) and build HTML; returns the html folder. `strict`
    turns Sphinx warnings into errors; `student` leaves the exercises' solutions out of the pages and the
    downloadable notebooks; `force` re-executes every chapter."""
    get_scale(scale)
    chapters = list(chapters or CHAPTERS)
    unknown = [c for c in chapters if c not in CHAPTERS]
    if unknown:
        raise ValueError(f"unknown chapter(s) {unknown}; chapters: {', '.join(CHAPTERS)}")
    build_dir = Path(build_dir or REPO / "_build")
    if build_dir.name != "_build":
        raise ValueError("build_dir must be named _build (Jupyter Book writes <path-output>/_build/html)")
    stale = launch.sync(REPO, write=False)
    if stale:  # before any execution: the first cells must install from the configured repository
        raise ValueError(f"{', '.join(str(p.relative_to(REPO)) for p in stale)}: the first cell does not match "
                         f"_config.yml's repository setting; run `companion launch-cell` to rewrite it")
    res = results_root(results)
    stage = build_dir / "stage"
    stage_sources(stage)
    execute_chapters(scale, chapters, results=res, stage=stage, cache_dir=cache_dir, force=force)
    for ch in chapters:
        prepare_page(stage / CHAPTERS[ch], student=student)
    if student:
        for page in (stage / "book").glob("*.md"):
            page.write_text(strip_solutions_markdown(page.read_text()))
    gen = stage / "book" / "_generated"
    atomic_write_bytes(gen / "datasets.md", datasets_markdown().encode())
    atomic_write_bytes(gen / "datasets.bib", datasets_bibtex().encode())
    links = {ch: "../" + CHAPTERS[ch].removesuffix(".ipynb") for ch in CHAPTERS}
    atomic_write_bytes(gen / "report.md", report_markdown(res, scale, chapter_docs=links).encode())
    jb = Path(sys.executable).with_name("jupyter-book")
    cmd = [str(jb) if jb.exists() else (shutil.which("jupyter-book") or "jupyter-book"), "build", str(stage),
           "--path-output", str(build_dir.parent), "--builder", "html"]
    if strict:
        cmd += ["-W", "-n", "--keep-going"]
    print("[companion] " + " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True)
    html = build_dir / "html"
    print(f"[companion] book built: {html / 'index.html'}", flush=True)
    return html
