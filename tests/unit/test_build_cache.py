"""Cached executions: a chapter is re-executed only when something it depends on changed (its notebook, the
companion modules it imports, shared inputs, scale, parameters) or its results folder is not as it was left."""
import json
import shutil

import pytest

import companion.build as B

SCALE = "ci"


@pytest.fixture
def repo(tmp_path):
    """A copy of what the chapters depend on, so that tests can edit sources without touching the checkout."""
    root = tmp_path / "repo"
    shutil.copytree(B.REPO / "src" / "companion", root / "src" / "companion",
                    ignore=shutil.ignore_patterns("__pycache__"))
    for nb in B.CHAPTERS.values():
        (root / nb).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(B.REPO / nb, root / nb)
    for name in B.SHARED_INPUTS:
        src = B.REPO / name
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (shutil.copytree if src.is_dir() else shutil.copy2)(src, root / name)
    return root


@pytest.fixture
def executions(monkeypatch):
    """execute_chapter replaced by a stand-in that records calls and writes a notebook and a results file."""
    calls = []

    def fake(chapter, scale, out, *, results, parameters=None, log_output=False):
        calls.append(chapter)
        out.write_text(json.dumps({"cells": [], "metadata": {"chapter": chapter}, "nbformat": 4,
                                   "nbformat_minor": 5}))
        d = results / chapter / scale
        d.mkdir(parents=True, exist_ok=True)
        (d / "scoreboard.json").write_text(json.dumps({"chapter": chapter}))
        return 0.0

    monkeypatch.setattr(B, "execute_chapter", fake)
    return calls


def run(repo, calls, **kw):
    calls.clear()
    executed = B.execute_chapters(SCALE, list(B.CHAPTERS), results=repo / "results", stage=repo / "_build" / "stage",
                                  repo=repo, **kw)
    assert executed == calls
    for nb in B.CHAPTERS.values():
        assert (repo / "_build" / "stage" / nb).exists(), "every chapter staged, executed or reused"
    return executed


def private_modules(repo):
    deps = {ch: set(B.chapter_modules(ch, repo)) for ch in B.CHAPTERS}
    return {ch: sorted(deps[ch] - set().union(*(deps[o] for o in B.CHAPTERS if o != ch))) for ch in B.CHAPTERS}


def test_second_run_with_nothing_changed_executes_nothing(repo, executions):
    assert run(repo, executions) == list(B.CHAPTERS)
    assert run(repo, executions) == []
    assert (repo / "_build" / "executed-cache" / f"{next(iter(B.CHAPTERS))}-{SCALE}.json").exists()
    assert run(repo, executions, force=True) == list(B.CHAPTERS)


def test_touching_one_chapters_module_reexecutes_that_chapter_only(repo, executions):
    run(repo, executions)
    own = private_modules(repo)
    assert any(own.values()), "no chapter has a module of its own"
    for chapter, files in own.items():
        if not files:
            continue
        with files[0].open("a") as f:
            f.write("\n# touched\n")
        assert run(repo, executions) == [chapter], files[0]
        assert run(repo, executions) == []


def test_shared_module_lock_file_and_parameters_reexecute_every_chapter(repo, executions):
    run(repo, executions)
    shared = set.intersection(*(set(B.chapter_modules(ch, repo)) for ch in B.CHAPTERS))
    assert repo / "src" / "companion" / "scales.py" in shared
    with (repo / "src" / "companion" / "scales.py").open("a") as f:
        f.write("\n# touched\n")
    assert run(repo, executions) == list(B.CHAPTERS)
    with (repo / "requirements" / "lock.txt").open("a") as f:
        f.write("example-package==1.0\n")
    assert run(repo, executions) == list(B.CHAPTERS)
    assert run(repo, executions, parameters={"seed": 1}) == list(B.CHAPTERS)
    assert run(repo, executions, parameters={"seed": 1}) == []


def test_notebook_edit_or_changed_results_reexecute_that_chapter(repo, executions):
    run(repo, executions)
    first, *_ = B.CHAPTERS
    nb_path = repo / B.CHAPTERS[first]
    nb = json.loads(nb_path.read_text())
    nb["cells"][0]["source"].append("\nOne more sentence.")
    nb_path.write_text(json.dumps(nb))
    assert run(repo, executions) == [first]
    (repo / "results" / first / SCALE / "scoreboard.json").write_text("{}")  # results edited since
    assert run(repo, executions) == [first]
    shutil.rmtree(repo / "results" / first / SCALE)  # results deleted
    assert run(repo, executions) == [first]
    assert run(repo, executions) == []


def test_chapter_modules_follow_imports():
    deps = {p.relative_to(B.REPO / "src").as_posix() for p in B.chapter_modules("vessel_data")}
    assert {"companion/chapter.py", "companion/vessel_data.py", "companion/scales.py",
            "companion/results/report.py", "companion/vessel_data_real.py", "companion/morphometry.py"} <= deps
    assert not any(d.startswith("companion/vaesselsparse/") for d in deps)


def test_student_copy_has_no_solutions():
    nb = {"cells": [
        {"cell_type": "markdown", "metadata": {}, "source": ["```{exercise}\n:label: ex-a\n\nDo it.\n```"]},
        {"cell_type": "markdown", "metadata": {}, "source": ["```{solution-start} ex-a\n:class: dropdown\n```\n",
                                                             "The secret answer.\n"]},
        {"cell_type": "code", "metadata": {}, "source": ["secret_code()"], "outputs": []},
        {"cell_type": "markdown", "metadata": {}, "source": ["```{solution-end}\n```\nAfter the end."]},
        {"cell_type": "markdown", "metadata": {}, "source": ["Before.\n\n````{solution} ex-a\nInline answer.\n````\n",
                                                             "\nKept."]},
        {"cell_type": "code", "metadata": {"tags": ["solution"]}, "source": ["tagged()"], "outputs": []},
        {"cell_type": "code", "metadata": {}, "source": ["kept()"], "outputs": []}]}
    text = json.dumps(B.strip_solutions(nb))
    for gone in ("secret answer", "secret_code", "Inline answer", "tagged()", "solution"):
        assert gone not in text, gone
    for kept in ("Do it.", "After the end.", "Before.", "Kept.", "kept()"):
        assert kept in text, kept
