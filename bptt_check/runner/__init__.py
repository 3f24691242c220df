"""The runner: the only code that calls the user's function (``target.py``), under a limit, its
output captured (``call.py``), its result read against the protocol (``read.py``); the adapters that
lower code in other conventions onto the protocol (``adapters.py``); loading a TARGET by name
(``load.py``). Internal: the public names are in ``bptt_check``."""
