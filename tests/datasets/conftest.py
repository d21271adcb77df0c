import importlib.util
import pathlib

import pytest

# tests/tiny_data.py, loaded by path (the suite runs with --import-mode=importlib: no package imports).
_SPEC = importlib.util.spec_from_file_location("tiny_data", pathlib.Path(__file__).parents[1] / "tiny_data.py")
tiny_data = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(tiny_data)


@pytest.fixture
def tiny():
    return tiny_data
