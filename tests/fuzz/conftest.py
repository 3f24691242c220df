"""The fuzz folder: its ``slow`` tests (the >= 1,000-case sweep) are collected only with ``-m slow``."""


def pytest_collection_modifyitems(config, items):
    if "slow" in (config.getoption("-m") or ""):
        return
    opt_in = [item for item in items if "slow" in item.keywords and "fuzz" in str(item.path)]
    if opt_in:
        config.hook.pytest_deselected(items=opt_in)
        items[:] = [item for item in items if item not in opt_in]
