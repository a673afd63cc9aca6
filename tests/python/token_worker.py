"""A PyPI `iii-sdk` worker that presents a worker token, driven by tests/python_sdk.rs.

Environment:
  III_URL          engine URL (ws://127.0.0.1:PORT)
  III_TOKEN        the worker token; the SDK sends it as `Authorization: Bearer` (may be unset)
  PY_WORKER_NAME   this worker's name

Calls `engine::functions::list` once (bounded, connecting included) and prints one line,
`RESULT {"ok": true, "functions": N}` or `RESULT {"ok": false, "error": "..."}`, then exits 0.
"""

import json
import os
import sys
import threading

from iii import InitOptions, register_worker

CALL_TIMEOUT_MS = 5_000
CONNECT_BOUND_S = 10.0
WATCHDOG_S = 30.0


def emit(tag, value):
    sys.stdout.write(f"{tag} {json.dumps(value, sort_keys=True)}\n")
    sys.stdout.flush()


def watchdog():
    sys.stderr.write(f"token_worker.py: watchdog fired after {WATCHDOG_S}s\n")
    sys.stderr.flush()
    os._exit(3)


def list_functions(outcome):
    try:
        worker = register_worker(
            os.environ["III_URL"],
            InitOptions(worker_name=os.environ["PY_WORKER_NAME"]),
        )
        listed = worker.trigger(
            {"function_id": "engine::functions::list", "payload": {}, "timeout_ms": CALL_TIMEOUT_MS}
        )
        outcome.update({"ok": True, "functions": len(listed["functions"])})
    except Exception as err:  # reported, so the Rust side sees why
        outcome.update({"ok": False, "error": repr(err)})


def main():
    timer = threading.Timer(WATCHDOG_S, watchdog)
    timer.daemon = True
    timer.start()
    # A refused SDK keeps retrying and its call waits for a connection: bound it here.
    outcome = {}
    caller = threading.Thread(target=list_functions, args=(outcome,), daemon=True)
    caller.start()
    caller.join(CONNECT_BOUND_S)
    emit("RESULT", outcome or {"ok": False, "error": f"no answer within {CONNECT_BOUND_S}s"})
    # Exit without waiting on threads the SDK (reconnects, telemetry) may still hold.
    os._exit(0)


if __name__ == "__main__":
    main()
