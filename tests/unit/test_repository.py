"""Repository rules: clean notebooks with a parameters cell, one pin set, a table of contents that matches."""
import json
import tomllib
from pathlib import Path

import pytest
import yaml

from companion.build import CHAPTERS
from companion.scales import CHAPTER_DATA, CHAPTER_PRESETS, SCALES

REPO = Path(__file__).resolve().parents[2]


def test_notebooks_committed_without_outputs_and_with_parameters_cell():
    nbs = sorted((REPO / "notebooks").glob("*.ipynb"))
    assert nbs, "no chapter notebooks"
    for nb_path in nbs:
        nb = json.loads(nb_path.read_text())
        code = [c for c in nb["cells"] if c["cell_type"] == "code"]
        assert "launch" in code[0].get("metadata", {}).get("tags", []), f"{nb_path.name}: first code cell"
        assert "parameters" in code[1].get("metadata", {}).get("tags", []), f"{nb_path.name}: second code cell"
        for c in code:
            assert c.get("outputs") == [] and c.get("execution_count") is None, f"{nb_path.name} has outputs"
        src = "".join(code[1]["source"])
        for p in ("scale", "data", "device", "seed", "output_dir", "overrides"):
            assert f"{p} =" in src, f"{nb_path.name}: parameter {p} missing"


def test_first_cell_installs_from_the_configured_repository():
    """One repository setting (_config.yml) drives the launch buttons and every notebook's install cell."""
    from companion import launch

    url, branch = launch.repository_setting(REPO)
    cfg = yaml.safe_load((REPO / "_config.yml").read_text())
    assert cfg["launch_buttons"]["colab_url"] and cfg["launch_buttons"]["binderhub_url"]
    assert cfg["launch_buttons"]["jupyterhub_url"]
    assert launch.sync(REPO, write=False) == [], "run `companion launch-cell`"
    for nb_path in launch.notebooks(REPO):
        first = next(c for c in json.loads(nb_path.read_text())["cells"] if c["cell_type"] == "code")
        src = "".join(first["source"])
        assert f"git+{url}@{branch}" in src and "%pip install" in src and 'find_spec("companion") is None' in src


def test_launch_cell_sync_rewrites_a_stale_cell(tmp_path):
    from companion import launch

    (tmp_path / "notebooks").mkdir()
    (tmp_path / "_config.yml").write_text("repository:\n  url: https://github.com/someone/fork\n  branch: dev\n")
    nb = {"cells": [{"cell_type": "markdown", "metadata": {}, "source": ["# T"]},
                    {"cell_type": "code", "metadata": {"tags": ["parameters"]}, "outputs": [],
                     "execution_count": None, "source": ["scale = 'ci'"]}],
          "metadata": {}, "nbformat": 4, "nbformat_minor": 5}
    (tmp_path / "notebooks" / "x.ipynb").write_text(json.dumps(nb))
    assert launch.sync(tmp_path, write=True) == [tmp_path / "notebooks" / "x.ipynb"]
    cells = json.loads((tmp_path / "notebooks" / "x.ipynb").read_text())["cells"]
    assert "git+https://github.com/someone/fork@dev" in "".join(cells[1]["source"])
    assert "parameters" in cells[2]["metadata"]["tags"] and len(cells) == 3
    assert launch.sync(tmp_path, write=False) == []
    (tmp_path / "_config.yml").write_text("repository:\n  url: https://github.com/other/fork\n")
    assert launch.sync(tmp_path, write=True) and len(json.loads((tmp_path / "notebooks" / "x.ipynb")
                                                                 .read_text())["cells"]) == 3
    (tmp_path / "_config.yml").write_text("repository: {}\n")
    with pytest.raises(ValueError, match="repository.url"):
        launch.sync(tmp_path, write=False)


def test_chapters_open_with_objectives_prerequisites_and_run_time():
    for nb in CHAPTERS.values():
        first = "".join(json.loads((REPO / nb).read_text())["cells"][0]["source"])
        for heading in ("**Learning objectives.**", "**Prerequisites.**", "**Run time**"):
            assert heading in first, f"{nb}: {heading} missing from the first cell"
        assert "`ci`" in first.split("**Run time**")[1] and "`laptop`" in first.split("**Run time**")[1]


def test_every_chapter_registered_everywhere():
    toc = (REPO / "_toc.yml").read_text()
    for chapter, nb in CHAPTERS.items():
        assert (REPO / nb).exists()
        assert nb.removesuffix(".ipynb") in toc
        assert chapter in CHAPTER_PRESETS and set(CHAPTER_PRESETS[chapter]) == set(SCALES)
        assert chapter in CHAPTER_DATA and set(CHAPTER_DATA[chapter]["default"]) == set(SCALES)
        assert (REPO / "src" / "companion" / "claims" / f"{chapter}.yaml").exists()


def test_environment_yml_has_the_same_pins_as_pyproject():
    proj = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    pins = set(proj["dependencies"]) | {d for extra in proj["optional-dependencies"].values() for d in extra}
    env = yaml.safe_load((REPO / "environment.yml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    assert set(pip) == pins
    assert all("==" in p for p in pins), "every direct dependency is pinned"
    lock = {line.split("==")[0].lower(): line.strip() for line in (REPO / "requirements/lock.txt").read_text()
            .splitlines() if "==" in line}
    for p in pins:
        assert lock[p.split("==")[0].lower()] == p, f"lock file disagrees with pyproject on {p}"


def test_ci_runs_the_readme_test_command():
    readme = (REPO / "README.md").read_text()
    assert "make test" in readme and "make book" in readme
    assert "make test" in (REPO / ".ci" / "run").read_text()


def test_launch_cell_installs_only_where_companion_is_missing(tmp_path, monkeypatch):
    """The launch cell, run as IPython runs it: nothing where companion imports; from the checkout it sits in
    (Binder, a hub); from the configured repository elsewhere (Colab)."""
    import importlib.util

    from IPython.core.inputtransformer2 import TransformerManager

    from companion import launch

    url, branch = "https://github.com/someone/fork", "dev"
    code = TransformerManager().transform_cell(launch.cell_source(url, branch))
    calls = []

    class Shell:
        def run_line_magic(self, name, line):
            calls.append((name, line))

    def run():
        ns = {"get_ipython": Shell}
        exec(code, ns)
        return ns

    run()
    assert calls == [], "companion imports here: the cell must do nothing"
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "companion" else real(name, *a))
    monkeypatch.chdir(tmp_path)
    ns = run()
    assert calls == [("pip", 'install --quiet "$_target"')]
    assert ns["_target"] == f"companion @ git+{url}@{branch}"
    checkout = tmp_path / "clone"
    (checkout / "src" / "companion").mkdir(parents=True)
    (checkout / "pyproject.toml").write_text("")
    (checkout / "notebooks").mkdir()
    monkeypatch.chdir(checkout / "notebooks")
    assert run()["_target"] == str(checkout)
