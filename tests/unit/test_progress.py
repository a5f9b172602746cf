from companion.progress import progress


def test_progress_bars_obey_tqdm_disable(monkeypatch):
    """The book's build sets TQDM_DISABLE=1; a bar that passes disable=False (as tqdm.notebook always does) must
    still be off, and without the variable it is on."""
    monkeypatch.delenv("TQDM_DISABLE", raising=False)
    assert progress(range(3), disable=False).disable is False
    monkeypatch.setenv("TQDM_DISABLE", "1")
    assert progress(range(3), disable=False).disable is True
    from tqdm.notebook import tqdm as notebook_tqdm  # the class tqdm.auto picks in a kernel ignores the variable

    assert notebook_tqdm(range(3), display=False).disable is False
