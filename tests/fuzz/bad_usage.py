"""Bad specs and command lines: each must exit 2 with one line saying what is wrong, and write nothing.

``BAD_USAGE`` holds (argv built in a scratch folder, words the line must contain). Used by
``tests/test_robustness_cli.py`` and by ``docs/gen_robustness_table.py`` for the docs table.
"""

from __future__ import annotations


def _write(tmp_path, name, text):
    p = tmp_path / name
    p.write_text(text)
    return str(p)


BAD_USAGE = [
    (lambda t: ["--truncation", "window:0"], "window size must be >= 1"),
    (lambda t: ["--truncation", "tbptt:4,2"], "k2 must be >= k1"),
    (lambda t: ["--truncation", "window:-2"], "window size must be >= 1"),
    (lambda t: ["--truncation", "sometimes"], "unknown truncation"),
    (lambda t: ["--activation", "gelu"], "invalid choice: 'gelu'"),
    (lambda t: ["--loss", "l1"], "invalid choice: 'l1'"),
    (lambda t: ["--cases", "0"], "must be >= 1"),
    (lambda t: ["--seed", "-1"], "must be >= 0"),
    (lambda t: ["--timeout", "-1"], "must be >= 0 seconds"),
    (lambda t: ["--timeout", "soon"], "expected a number of seconds"),
    (lambda t: ["--no-such-flag"], "unrecognized arguments"),
    (lambda t: ["--loss", "cross_entropy", "--output", "tanh"], "output must be softmax or identity"),
    (lambda t: [str(t / "nowhere.py") + ":fn"], "does not exist"),
    (lambda t: ["bptt_check:no_such_function"], "has no attribute 'no_such_function'"),
    (lambda t: ["bptt_check:__version__"], "not a function"),
    (lambda t: [_write(t, "boom.py", "raise RuntimeError('boom at import')\n") + ":backward"],
     "RuntimeError: boom at import"),
    (lambda t: [_write(t, "exits.py", "import sys\nsys.exit(0)\n") + ":backward"], "SystemExit"),
    (lambda t: [_write(t, "syntax.py", "def backward(:\n") + ":backward"], "SyntaxError"),
    (lambda t: [_write(t, "arity.py", "def backward(params):\n    return {}\n") + ":backward"],
     "cannot be called as backward(params, x, y)"),
    (lambda t: ["--report-dir", _write(t, "afile", "x")], "is a file, not a folder"),
    # issue 13
    (lambda t: ["--truncation", "window:99999999999999999999"], "window sizes must be at most 1,000,000"),
    (lambda t: ["--directions", "100000"], "must be at most 1024"),
    (lambda t: ["--isolate", "container"], "isolate must be one of process, thread, none"),
    (lambda t: [_write(t, "quits.py", "import os\nos._exit(0)\n") + ":backward"],
     "ended the worker process: exit code 0"),
    (lambda t: [_write(t, "factory.py", "import sys\ndef backward():\n    sys.exit(0)\n") + ":backward"],
     "calling the TARGET factory backward() failed: SystemExit: 0"),
]
