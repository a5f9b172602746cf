import pytest
import torch

from companion import chapter
from companion.data import DataAccessError
from companion.data.manifests import _load_all
from companion.scales import CHAPTER_DATA, chapter_config


def test_unknown_scale_lists_choices(tmp_path):
    with pytest.raises(ValueError, match="valid scales: ci, laptop, paper"):
        chapter.start("vessel_data", scale="huge", output_dir=tmp_path)


def test_unknown_data_lists_choices(tmp_path):
    with pytest.raises(ValueError, match="synthetic"):
        chapter.start("vessel_data", scale="ci", data="nope", output_dir=tmp_path)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_without_cuda(tmp_path):
    with pytest.raises(ValueError, match="CUDA is not available"):
        chapter.start("vessel_data", scale="ci", device="cuda", output_dir=tmp_path)


def test_unknown_device(tmp_path):
    with pytest.raises(ValueError, match="valid: auto, cpu, cuda, mps"):
        chapter.start("vessel_data", scale="ci", device="tpu", output_dir=tmp_path)


def test_bad_override_and_seed(tmp_path):
    with pytest.raises(ValueError, match="valid overrides: .*grid"):
        chapter_config("vessel_data", "ci", {"gird": 64})
    with pytest.raises(ValueError, match="must be of type int"):
        chapter_config("vessel_data", "ci", {"grid": "64"})
    with pytest.raises(ValueError, match="non-negative integer"):
        chapter.start("vessel_data", scale="ci", seed=-1, output_dir=tmp_path)


def test_gated_dataset_not_present_says_what_to_do(tmp_path, monkeypatch):
    mdir = tmp_path / "manifests"
    mdir.mkdir()
    (mdir / "gatedset.yaml").write_text(
        "id: gatedset\ntitle: Gated set\nchapters: [vessel_data]\nhomepage: https://example.org\n"
        "access: registration\nlicense: null\ncitation: x\nfiles: []\nlayout: x\nloader: none\n"
        "manual: Register on the challenge site and download the training archive.\n")
    monkeypatch.setenv("COMPANION_MANIFESTS", str(mdir))
    monkeypatch.setenv("COMPANION_DATA", str(tmp_path / "empty"))
    monkeypatch.setitem(CHAPTER_DATA["vessel_data"], "manifests", True)
    _load_all.cache_clear()
    try:
        assert "gatedset" in chapter.data_choices("vessel_data")
        with pytest.raises(DataAccessError, match="Register on the challenge site") as exc:
            chapter.start("vessel_data", scale="ci", data="gatedset", output_dir=tmp_path)
        assert str(tmp_path / "empty" / "gatedset" / "raw") in str(exc.value)
        assert not (tmp_path / "vessel_data").exists()  # failed before any results folder was made
    finally:
        _load_all.cache_clear()


def test_good_parameters(tmp_path):
    run = chapter.start("vessel_data", scale="ci", seed=1, output_dir=tmp_path, overrides={"grid": 48})
    assert run.device == "cpu" or torch.cuda.is_available()
    assert run.cfg["grid"] == 48 and run.data == "synthetic"
    assert run.results.dir == tmp_path / "vessel_data" / "ci"


def test_seeds_and_threads_are_settings_of_the_scale(monkeypatch, tmp_path):
    """A second run "as another machine would": another seed set and another thread count, one setting each."""
    import torch

    from companion.chapter import start
    from companion.scales import SEEDS_ENV, THREADS_ENV, parse_seeds, run_settings

    monkeypatch.delenv(SEEDS_ENV, raising=False)
    monkeypatch.delenv(THREADS_ENV, raising=False)
    assert run_settings("ci") == ((0,), None) and run_settings("laptop", seed=2) == ((2, 3, 4), None)
    monkeypatch.setenv(SEEDS_ENV, "3,4,5")
    monkeypatch.setenv(THREADS_ENV, "1")
    assert run_settings("laptop") == ((3, 4, 5), 1)
    before = torch.get_num_threads()
    try:
        run = start("sparsevm", scale="ci", output_dir=str(tmp_path))
        assert run.seeds == (3, 4, 5) and run.seed == 3 and run.threads == 1 and torch.get_num_threads() == 1
        assert run.results.params["seeds"] == [3, 4, 5] and "training seeds 3, 4, 5" in repr(run)
    finally:
        torch.set_num_threads(before)
    for bad in ("", "a,b", "1,1", "-1"):
        with pytest.raises(ValueError, match="seeds"):
            parse_seeds(bad)
    monkeypatch.setenv(THREADS_ENV, "0")
    with pytest.raises(ValueError, match="threads"):
        run_settings("ci")
