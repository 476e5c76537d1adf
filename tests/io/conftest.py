"""Shared fixtures of the reader tests: where the real detector files are."""

from pathlib import Path

import pytest

REALDATA = Path(__file__).parents[2].parent / "shared" / "realdata" / "rosettasciio"


@pytest.fixture
def realdata():
    """``../shared/realdata/rosettasciio`` (skips the test when the files are absent)."""
    if not REALDATA.is_dir():
        pytest.skip(f"real detector files not found at {REALDATA}")
    return REALDATA
