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
