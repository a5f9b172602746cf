"""Fixtures shared by the unit and book tests.

``real_dataset(dataset_id)`` gives the folder of a real public dataset, fetched once per test session into a
scratch ``COMPANION_DATA`` (never the user's cache): from a local mirror when ``COMPANION_MIRROR`` names one (``make
test`` and ``.ci/run`` point it at ``../shared/data`` when that folder exists), else from the network. When neither
works the test is skipped with the command that fetches the data. A mirror copy that does not match its manifest
fails the test: a wrong copy is an error, not a reason to skip.

    def test_something(real_dataset):
        root = real_dataset("topcow_roi")             # ready: companion.data.real.load works
"""
from __future__ import annotations

import pytest

_ready: dict[str, object] = {}  # dataset id -> its folder, or the reason it is not available (per session)


@pytest.fixture(scope="session")
def real_data_root(tmp_path_factory):
    """The scratch ``COMPANION_DATA`` of the real-data tests (one per session, so each dataset is fetched once)."""
    return tmp_path_factory.mktemp("companion-real-data")


@pytest.fixture()
def real_dataset(real_data_root, monkeypatch):
    from companion.data import download as F
    from companion.data.manifests import _load_all

    monkeypatch.setenv("COMPANION_DATA", str(real_data_root))
    monkeypatch.delenv("COMPANION_MANIFESTS", raising=False)  # the repository's manifests
    _load_all.cache_clear()

    def get(dataset_id: str):
        if dataset_id not in _ready:
            try:
                _ready[dataset_id] = F.fetch(dataset_id, progress=False)
            except F.DataAccessError as exc:  # no mirror holds it and the network did not give it
                reason = str(exc).splitlines()[0]
                _ready[dataset_id] = reason if len(reason) < 200 else reason[:200] + " ..."
        found = _ready[dataset_id]
        if isinstance(found, str):
            pytest.skip(f"{dataset_id} is not available here ({found}); fetch it with `companion data fetch "
                        f"{dataset_id}` (or `--mirror DIR` / COMPANION_MIRROR for a local copy)")
        return found

    return get
