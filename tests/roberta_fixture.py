"""A tiny random chinese-roberta directory, written once per test session (imported by the
text/BERT tests; kept out of conftest.py so the fixture stays with its users)."""

import atexit
import functools
import shutil
import tempfile
from pathlib import Path

import pytest


@functools.lru_cache(maxsize=1)
def tiny_roberta_path() -> Path:
    from dora_gpt_sovits.devmodels.roberta import write_random_roberta

    directory = Path(tempfile.mkdtemp(prefix="tiny_roberta_"))
    atexit.register(shutil.rmtree, directory, ignore_errors=True)
    return write_random_roberta(directory, "tiny")


@pytest.fixture(scope="session")
def tiny_roberta_dir() -> Path:
    return tiny_roberta_path()
