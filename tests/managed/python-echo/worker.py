"""A managed worker for tests/managed_workers.rs (PyPI `iii-sdk`).

quorum starts it with III_URL (its node's worker port) and III_WORKER_NAME. It serves
`<name>::echo` (answers with its input, its pid and the engine URL it uses) and
`<name>::crash` (exits the process at once, for the restart test), and `<name>::slow`
(answers after `ms` milliseconds, for the drain test). It prints the URL it connects to.
SIGTERM shuts it down cleanly.
"""

import os
import signal
import threading
import time

from iii import InitOptions, register_worker

NAME = os.environ["III_WORKER_NAME"]
URL = os.environ["III_URL"]
MARKER = os.environ.get("ECHO_MARKER", "")


def echo(data):
    return {"echo": data, "pid": os.getpid(), "url": URL, "marker": MARKER}


def crash(_data):
    os._exit(7)


def slow(data):
    time.sleep((data or {}).get("ms", 100) / 1000.0)
    return {"pid": os.getpid(), "url": URL}


def main():
    # As SDKs do: the URL in the output (its local token must not reach `quorum worker logs`).
    print(f"{NAME} connecting to {URL}", flush=True)
    worker = register_worker(URL, InitOptions(worker_name=NAME))
    worker.register_function(f"{NAME}::echo", echo, description="Echoes its input")
    worker.register_function(f"{NAME}::crash", crash, description="Exits the process")
    worker.register_function(f"{NAME}::slow", slow, description="Answers after a while")
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    done.wait()
    # Let calls in flight finish before the socket closes.
    time.sleep(0.2)
    worker.shutdown()
    os._exit(0)


if __name__ == "__main__":
    main()
