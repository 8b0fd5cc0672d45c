"""Shared fixtures (the synthetic data helpers live in tests/synthetic.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.synthetic import write_mvtec_category


@pytest.fixture(scope="session")
def mvtec_category(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small synthetic MVTec-layout category shared by the tests that only read it."""
    return write_mvtec_category(tmp_path_factory.mktemp("data") / "widget")
