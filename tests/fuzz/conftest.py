"""The fuzz folder: its ``slow`` tests (the >= 1,000-case sweep) run only when asked for with ``-m slow``."""

import pytest


def pytest_collection_modifyitems(config, items):
    if "slow" in (config.getoption("-m") or ""):
        return
    skip = pytest.mark.skip(reason="opt-in sweep: run with  pytest -m slow tests/fuzz")
    for item in items:
        if "slow" in item.keywords and "fuzz" in str(item.path):
            item.add_marker(skip)
