"""What the Python benchmarks (bench/python_bench.py,
bench/python_broadcast_bench.py) share: the checked message and its
verification, CPU pinning, waiting by polling, iceoryx2's node and ports,
the transports named on the command line and the report's framing.

The scripts run as programs and their measurement processes are spawned
(they import the script again), so this module sits beside them: the
script's folder is first on sys.path in both.
"""

from __future__ import annotations

import argparse
import ctypes
import datetime
import importlib
import os
import platform
import statistics

MiB = 1 << 20


# ---- messages -------------------------------------------------------------------


def pattern(seq: int, size: int) -> bytes:
    """Message `seq`: its sequence number repeated over all `size` bytes."""
    return seq.to_bytes(8, "little") * (size // 8)


class VerifyError(AssertionError):
    """A message that was not the expected one, or a peer that failed."""


def check(ok: bool, what: str) -> None:
    if not ok:
        raise VerifyError(what)


# ---- processes ------------------------------------------------------------------


def pin(cpu: int | None) -> None:
    if cpu is not None:
        os.sched_setaffinity(0, {cpu})


def poll(try_receive):
    """Calls try_receive() until it returns something: a receiver that never
    sleeps (so is never woken), as iceoryx2's Python binding needs without an
    event service."""
    while True:
        m = try_receive()
        if m is not None:
            return m


# ---- iceoryx2 -------------------------------------------------------------------

_iox2_node = None


def iox2_node():
    """This process's iceoryx2 node, made once and kept for the whole run."""
    global _iox2_node
    import iceoryx2 as iox2

    if _iox2_node is None:
        iox2.set_log_level(iox2.LogLevel.Error)
        _iox2_node = iox2.NodeBuilder.new().create(iox2.ServiceType.Ipc)
    return _iox2_node


def iox2_service(name: str, size: int, buffer: int, max_subscribers: int | None = None):
    """A publish/subscribe service of `size`-byte messages that loses none: no
    safe overflow (it would drop the oldest sample of a full buffer)."""
    import iceoryx2 as iox2

    builder = iox2_node().service_builder(iox2.ServiceName.new(name)).publish_subscribe(
        ctypes.c_uint8 * size)
    if max_subscribers is not None:
        builder = builder.max_subscribers(max_subscribers).max_publishers(1)
    return (builder.subscriber_max_buffer_size(buffer).history_size(0)
            .enable_safe_overflow(False).open_or_create())


def iox2_publisher(service):
    """A publisher that waits for room (RetryUntilDelivered), as a reliable
    ring's producer does."""
    import iceoryx2 as iox2

    return (service.publisher_builder()
            .backpressure_strategy(iox2.BackpressureStrategy.RetryUntilDelivered).create())


def iox2_send(pub, msg: bytes) -> None:
    """Copies `msg` into a loaned sample and sends it."""
    sample = pub.loan_uninit()
    ctypes.memmove(sample.payload_ptr, msg, len(msg))
    sample.assume_init().send()


# ---- the command line and the report --------------------------------------------


def available_transports(ap: argparse.ArgumentParser, requested: str, transports: dict,
                         modules: dict[str, str]) -> list[str]:
    """The keys of `transports` named in `requested` (comma-separated), less
    those whose module (`modules`: key -> module name) is not installed,
    which are skipped with a line saying so. An unknown key is a usage error."""
    keys = []
    for key in requested.split(","):
        if key not in transports:
            ap.error(f"unknown transport '{key}'")
        if key in modules:
            try:
                importlib.import_module(modules[key])
            except ImportError:
                print(f"skipping {key}: not installed (pip install {key})")
                continue
        keys.append(key)
    return keys


def fmt_range(values, unit_fn) -> str:
    """Median (min - max) of `values`, each shown by unit_fn; "failed" if none."""
    if not values:
        return "failed"
    med = statistics.median(values)
    return f"{unit_fn(med)} ({unit_fn(min(values))} - {unit_fn(max(values))})"


def machine_line() -> str:
    """What a report's first line starts with: the interpreter, the machine,
    the time."""
    return (f"Python {platform.python_version()}, {platform.machine()}, {os.cpu_count()} CPUs, "
            f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC")


def write_report(report: str, out: str | None) -> None:
    """Prints the report and, with --out, writes it there too."""
    print()
    print(report)
    if out:
        os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
        with open(out, "w") as f:
            f.write(report + "\n")
