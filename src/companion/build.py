"""Build the book: execute every chapter notebook with papermill at one scale, generate the data and report pages,
then run Jupyter Book 1.x on a staging copy so that executed notebooks never land in the sources.

    _build/stage/            staging copy: _config.yml, _toc.yml, book/, executed notebooks/
    _build/html/             the rendered book
    results/<chapter>/<scale>/   what each chapter wrote (results contract)
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from .data.manifests import load_manifests
from .results import atomic_write_bytes, report_markdown, results_root
from .scales import get_scale

REPO = Path(__file__).resolve().parents[2]

# chapter id -> notebook (relative to the repo).  The book's order is _toc.yml's.
CHAPTERS: dict[str, str] = {
    "vessel_data": "notebooks/00_vessel_data.ipynb",
    "vaesselsparse": "notebooks/01_vaesselsparse.ipynb",
    "vaesselsparse_latent": "notebooks/01b_vaesselsparse_latent.ipynb",
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


def datasets_markdown() -> str:
    """The datasets page's table, generated from data_manifests/."""
    rows = ["| dataset | chapters | access | license | size | checksums | modality | citation |",
            "|---|---|---|---|---|---|---|---|"]
    for m in sorted(load_manifests().values(), key=lambda m: (m.access, m.id)):
        cite = f"{{cite:p}}`{m.id}`" if m.bibtex else m.citation.replace("|", "/")
        title = f"[{m.title}]({m.homepage})" if m.homepage else m.title
        access = "ships in a PyPI package" if m.is_packaged else ACCESS_TEXT[m.access]
        if m.access != "open" and m.downloadable:
            access += f"; the files download directly from {', '.join(m.download_hosts)}"
        rows.append(f"| {title} (`{m.id}`) | {', '.join(m.chapters)} | {access} | "
                    f"{m.license or 'not stated'} | {m.size or '–'} | {m.checksums or '–'} | "
                    f"{m.modality or '–'} | "
                    f"{cite} |")
    return "\n".join(rows) + "\n"


def datasets_bibtex() -> str:
    return "\n".join(m.bibtex.strip() + "\n" for m in load_manifests().values() if m.bibtex)


def stage_sources(stage: Path) -> None:
    if stage.exists():
        shutil.rmtree(stage)
    stage.mkdir(parents=True)
    for name in ("_config.yml", "_toc.yml"):
        shutil.copy2(REPO / name, stage / name)
    shutil.copytree(REPO / "book", stage / "book", ignore=shutil.ignore_patterns("_generated", "reference"))


def build(scale: str = "laptop", *, strict: bool = False, chapters: list[str] | None = None,
          results: str | Path | None = None, build_dir: str | Path | None = None) -> Path:
    """Execute the chapters and build HTML; returns the html folder. `strict` turns Sphinx warnings into errors."""
    get_scale(scale)
    chapters = list(chapters or CHAPTERS)
    unknown = [c for c in chapters if c not in CHAPTERS]
    if unknown:
        raise ValueError(f"unknown chapter(s) {unknown}; chapters: {', '.join(CHAPTERS)}")
    build_dir = Path(build_dir or REPO / "_build")
    if build_dir.name != "_build":
        raise ValueError("build_dir must be named _build (Jupyter Book writes <path-output>/_build/html)")
    res = results_root(results)
    stage = build_dir / "stage"
    stage_sources(stage)
    for ch in chapters:
        out = stage / CHAPTERS[ch]
        print(f"[companion] executing {CHAPTERS[ch]} at scale {scale} ...", flush=True)
        secs = execute_chapter(ch, scale, out, results=res)
        print(f"[companion] {ch}: {secs:.0f} s", flush=True)
    gen = stage / "book" / "_generated"
    atomic_write_bytes(gen / "datasets.md", datasets_markdown().encode())
    atomic_write_bytes(gen / "datasets.bib", datasets_bibtex().encode())
    atomic_write_bytes(gen / "report.md", report_markdown(res, scale).encode())
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
