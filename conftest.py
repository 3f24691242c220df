"""Root conftest: test-suite settings shared by every test folder.

Hypothesis: with CI=true in the environment Hypothesis picks its own ``ci``
profile (derandomized, no deadline); we leave that alone. Locally we only lift
the deadline, because a first torch call can take longer than 200 ms.
"""

import os

from hypothesis import settings

pytest_plugins = ["pytester"]

if not os.environ.get("CI"):
    settings.register_profile("dev", deadline=None)
    settings.load_profile("dev")


def pytest_collection_modifyitems(config, items):
    """``slow`` tests (big sweeps) are opt-in: collected only when ``-m`` names them."""
    if "slow" in (config.getoption("-m") or ""):
        return
    opt_in = [item for item in items if "slow" in item.keywords]
    if opt_in:
        config.hook.pytest_deselected(items=opt_in)
        items[:] = [item for item in items if item not in opt_in]
