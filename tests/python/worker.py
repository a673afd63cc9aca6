"""A real PyPI `iii-sdk` worker, driven by tests/python_sdk.rs.

Usage: python worker.py MODE

Environment:
  III_URL          engine URL (ws://127.0.0.1:PORT)
  PY_WORKER_NAME   this worker's name
  RUST_GREET       id of a sync function served by the Rust worker (roundtrip mode)
  RUST_SINK        id of a function served by the Rust worker, called with a void action
  RUN_TOKEN        a value unique to this run, echoed through the calls

Modes:
  roundtrip  register py::echo, then call the Rust worker, make a void call, list
             functions, hit function_not_found and print one `RESULT {json}` line.
  serve      register py::echo and py::fail and do nothing else.

Both modes print `READY {json}` once the engine lists py::echo, then keep serving
until standard input reaches end of file, then shut the worker down and exit 0.
Everything the test reads is on stdout; the SDK logs go to stderr.
"""

import json
import os
import sys
import threading
import time
import traceback

from iii import InitOptions, InvocationError, TriggerAction, register_worker

# Bounds for every wait in this script: the Rust side has its own as well.
CALL_TIMEOUT_MS = 10_000
LISTED_TIMEOUT_S = 15.0
WATCHDOG_S = 50.0


def emit(tag, value):
    sys.stdout.write(f"{tag} {json.dumps(value, sort_keys=True)}\n")
    sys.stdout.flush()


def watchdog():
    # The script must never outlive a test that forgot it: exit hard after a bound.
    sys.stderr.write(f"worker.py: watchdog fired after {WATCHDOG_S}s\n")
    sys.stderr.flush()
    os._exit(3)


def echo(data):
    return {"echo": data, "marker": "python-iii-sdk"}


def fail(data):
    raise ValueError(f"python says no to {data.get('what') if isinstance(data, dict) else data!r}")


def call(worker, function_id, payload, **extra):
    request = {"function_id": function_id, "payload": payload, "timeout_ms": CALL_TIMEOUT_MS}
    request.update(extra)
    return worker.trigger(request)


def list_functions(worker):
    listed = call(worker, "engine::functions::list", {"include_internal": True})
    return listed["functions"]


def wait_listed(worker, function_id):
    """Polls the engine's function list (it has no push) until function_id is there."""
    deadline = time.monotonic() + LISTED_TIMEOUT_S
    while True:
        rows = list_functions(worker)
        if any(row.get("function_id") == function_id for row in rows):
            return rows
        if time.monotonic() > deadline:
            raise TimeoutError(f"{function_id} not listed after {LISTED_TIMEOUT_S}s")
        time.sleep(0.05)


def roundtrip(worker, token):
    results = {}
    rust_greet = os.environ["RUST_GREET"]
    rust_sink = os.environ["RUST_SINK"]

    # A sync call to a function the Rust worker serves.
    results["greet"] = call(worker, rust_greet, {"name": "python", "token": token})

    # A void call: answered with None at once, the Rust test sees it run.
    results["void_returned"] = call(
        worker, rust_sink, {"from": "python", "token": token}, action=TriggerAction.Void()
    )

    # This worker's own function, routed through the engine rather than in-process.
    results["self_call"] = call(worker, "py::echo", {"self": token}, dispatch="remote")

    # Discovery: the Rust worker's function and our own, with their owners.
    rows = list_functions(worker)
    results["functions"] = [
        {
            "function_id": row.get("function_id"),
            "namespace": row.get("namespace"),
            "worker_name": row.get("worker_name"),
        }
        for row in rows
        if row.get("function_id") in (rust_greet, rust_sink, "py::echo")
    ]

    # An id nobody serves.
    missing = f"py::missing_{token}"
    try:
        value = call(worker, missing, {})
        results["missing"] = {"unexpected_result": value}
    except InvocationError as err:
        results["missing"] = {
            "code": err.code,
            "message": err.message,
            "function_id": err.function_id,
        }

    # A Rust handler's error, with its own code.
    try:
        value = call(worker, rust_greet, {"fail": True})
        results["rust_error"] = {"unexpected_result": value}
    except InvocationError as err:
        results["rust_error"] = {"code": err.code, "message": err.message}

    return results


def main():
    mode = sys.argv[1] if len(sys.argv) > 1 else "roundtrip"
    token = os.environ.get("RUN_TOKEN", "")
    timer = threading.Timer(WATCHDOG_S, watchdog)
    timer.daemon = True
    timer.start()

    worker = register_worker(
        os.environ["III_URL"],
        InitOptions(worker_name=os.environ["PY_WORKER_NAME"]),
    )
    worker.register_function("py::echo", echo, description="Echoes its input")
    if mode == "serve":
        worker.register_function("py::fail", fail, description="Always raises")

    wait_listed(worker, "py::echo")
    emit("READY", {"worker_id": worker.worker_id, "mode": mode})

    if mode == "roundtrip":
        try:
            emit("RESULT", roundtrip(worker, token))
        except Exception as err:  # reported, so the Rust side fails with the reason
            emit("RESULT", {"exception": repr(err), "traceback": traceback.format_exc()})

    # Keep serving py::echo until the test closes our stdin.
    sys.stdin.read()
    worker.shutdown()
    emit("DONE", {})
    sys.stdout.flush()
    # Exit without waiting on threads the SDK's telemetry may still hold.
    os._exit(0)


if __name__ == "__main__":
    main()
