"""pytest settings for the examples of the docstrings, which pytest-doctestplus runs."""

import pytest

__all__ = []


@pytest.fixture(autouse=True)
def _examples_in_a_scratch_directory(tmp_path, monkeypatch):
    """Run each module's examples in an empty directory of their own: they write files."""
    monkeypatch.chdir(tmp_path)
