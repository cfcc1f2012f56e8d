"""Fixtures of the training-loop tests."""
import pytest


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """A private vitdata cache (the built-in dataset, indexes) under this test's tmp_path."""
    d = tmp_path / "cache"
    monkeypatch.setenv("VITDATA_CACHE", str(d))
    return d
