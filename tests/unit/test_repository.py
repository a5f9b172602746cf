"""Repository rules: clean notebooks with a parameters cell, one pin set, a table of contents that matches."""
import json
import tomllib
from pathlib import Path

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
        assert "parameters" in code[0].get("metadata", {}).get("tags", []), f"{nb_path.name}: first code cell"
        for c in code:
            assert c.get("outputs") == [] and c.get("execution_count") is None, f"{nb_path.name} has outputs"
        src = "".join(code[0]["source"])
        for p in ("scale", "data", "device", "seed", "output_dir", "overrides"):
            assert f"{p} =" in src, f"{nb_path.name}: parameter {p} missing"


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
