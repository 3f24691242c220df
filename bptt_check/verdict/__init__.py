"""The verdict on one case, in stages (``pipeline.py``): call → reference (``consensus.py``; fast mode:
``fast.py``) → judge (``judge.py``) → settle (``settle.py``, with ``precision.py`` and ``taylor.py``)
→ explain (``diagnosis.py``, ``evidence.py``). Internal: the public names are in ``bptt_check``."""
