"""How the deployment checks report: the first failed check prints one FAIL line and
exits non-zero, so the Rust test shows exactly what broke."""

import sys


def fail(message):
    print(f"FAIL: {message}")
    sys.exit(1)


def check(condition, message):
    if not condition:
        fail(message)
