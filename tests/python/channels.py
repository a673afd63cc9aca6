"""A real PyPI `iii-sdk` worker whose handlers stream through data channels, driven by
tests/channels_sdks.rs and tests/channels_faults.rs.

Usage: python channels.py

Environment:
  III_URL          engine URL (ws://127.0.0.1:PORT), or a load balancer in front of nodes
  PY_WORKER_NAME   this worker's name

Functions (both async; the SDK turns the channel refs in their input into a reader or a
writer by itself, on the connection's own engine URL):
  py::chan::consume  {reader: <ref>}  reads the stream to its end and answers a summary
  py::chan::produce  {writer: <ref>, plan: [{"text": s} | {"binary": n}, ...]}
                     writes the plan (random bytes), closes, and answers a summary of what
                     it wrote

A summary is {sha256, bytes, frames, max_frame, sequence}: sha256 and bytes of all binary
data, the number of binary frames and the largest, and the items in order with consecutive
binary frames merged ({"binary": total}), so it compares equal to the plan. The consumer
adds the close code its socket ended with (1000 clean, 1011 error, 1006 no close frame).

Prints `READY {json}` once the engine lists both functions, keeps serving until standard
input reaches end of file, then shuts the worker down, prints `DONE {}` and exits 0.
"""

import hashlib
import json
import os
import sys
import threading
import time

from iii import InitOptions, register_worker
from iii.channels import ChannelReader, ChannelWriter

LISTED_TIMEOUT_S = 15.0
WATCHDOG_S = 300.0
# Bytes handed to the writer at once; the SDK splits them into 64 KiB frames.
PIECE = 1024 * 1024
FRAME = 64 * 1024


def emit(tag, value):
    sys.stdout.write(f"{tag} {json.dumps(value, sort_keys=True)}\n")
    sys.stdout.flush()


def watchdog():
    # The script must never outlive a test that forgot it: exit hard after a bound.
    sys.stderr.write(f"channels.py: watchdog fired after {WATCHDOG_S}s\n")
    sys.stderr.flush()
    os._exit(3)


class Summary:
    """What went through one end of a channel, in the shape the Rust side compares."""

    def __init__(self):
        self.digest = hashlib.sha256()
        self.bytes = 0
        self.frames = 0
        self.max_frame = 0
        self.sequence = []

    def text(self, message):
        self.sequence.append({"text": message})

    def binary(self, data, frames, largest):
        self.digest.update(data)
        self.bytes += len(data)
        self.frames += frames
        self.max_frame = max(self.max_frame, largest)
        if self.sequence and "binary" in self.sequence[-1]:
            self.sequence[-1]["binary"] += len(data)
        else:
            self.sequence.append({"binary": len(data)})

    def report(self):
        return {
            "sha256": self.digest.hexdigest(),
            "bytes": self.bytes,
            "frames": self.frames,
            "max_frame": self.max_frame,
            "sequence": self.sequence,
        }


async def consume(data):
    reader = data["reader"]
    if not isinstance(reader, ChannelReader):
        raise TypeError(f"the SDK did not resolve the reader ref: {type(reader).__name__}")
    summary = Summary()
    reader.on_message(summary.text)
    async for chunk in reader:
        summary.binary(chunk, 1, len(chunk))
    result = summary.report()
    # The SDK's reader ends quietly on any close; the socket still knows how it ended.
    ws = getattr(reader, "_ws", None)
    result["close_code"] = ws.close_code if ws is not None else None
    return result


async def produce(data):
    writer = data["writer"]
    if not isinstance(writer, ChannelWriter):
        raise TypeError(f"the SDK did not resolve the writer ref: {type(writer).__name__}")
    summary = Summary()
    for step in data["plan"]:
        if "text" in step:
            await writer.send_message_async(step["text"])
            summary.text(step["text"])
            continue
        remaining = int(step["binary"])
        while remaining > 0:
            piece = os.urandom(min(remaining, PIECE))
            await writer.write(piece)
            summary.binary(piece, (len(piece) + FRAME - 1) // FRAME, min(len(piece), FRAME))
            remaining -= len(piece)
    await writer.close_async()
    return summary.report()


def wait_listed(worker, function_ids):
    """Polls the engine's function list (it has no push) until every id is there."""
    deadline = time.monotonic() + LISTED_TIMEOUT_S
    while True:
        listed = worker.trigger(
            {
                "function_id": "engine::functions::list",
                "payload": {"include_internal": True},
                "timeout_ms": 10_000,
            }
        )
        ids = {row.get("function_id") for row in listed["functions"]}
        if all(f in ids for f in function_ids):
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"{function_ids} not listed after {LISTED_TIMEOUT_S}s")
        time.sleep(0.05)


def main():
    timer = threading.Timer(WATCHDOG_S, watchdog)
    timer.daemon = True
    timer.start()

    worker = register_worker(
        os.environ["III_URL"],
        InitOptions(worker_name=os.environ["PY_WORKER_NAME"]),
    )
    worker.register_function("py::chan::consume", consume, description="Reads a channel")
    worker.register_function("py::chan::produce", produce, description="Writes a channel")
    wait_listed(worker, ["py::chan::consume", "py::chan::produce"])
    emit("READY", {"worker_id": worker.worker_id})

    sys.stdin.read()
    worker.shutdown()
    emit("DONE", {})
    sys.stdout.flush()
    # Exit without waiting on threads the SDK's telemetry may still hold.
    os._exit(0)


if __name__ == "__main__":
    main()
