import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
os.environ.setdefault("OMP_NUM_THREADS", "2")


@pytest.fixture
def mrisr_env(tmp_path, monkeypatch):
    """Fresh mrisr_raw / mrisr_preprocessed / mrisr_results folders."""
    roots = {k: tmp_path / k for k in ("mrisr_raw", "mrisr_preprocessed", "mrisr_results")}
    for k, p in roots.items():
        p.mkdir()
        monkeypatch.setenv(k, str(p))
    return roots
