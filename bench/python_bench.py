#!/usr/bin/env python3
"""Python IPC benchmark: shmring against multiprocessing.Queue, faster-fifo and
iceoryx2, in one run.

For each transport, between two processes:
  round trip   64 B ping -> echo process -> pong, one at a time (latency)
  throughput   64 B and 1 MiB messages from a producer process to this one
Every message is verified: each one is its sequence number repeated over the
whole message, and the receiver compares every byte (echo: both sides). Each
transport uses its fastest fitting API: shmring push/pop for 64 B, and for
1 MiB a claim filled in place / a peek checked in place; iceoryx2 loans
filled in place and samples read in place (it is zero-copy too); the two
queues pickle (copy) what they carry. iceoryx2 has no blocking receive in its
Python binding without an event service, so its receivers poll.

shmring runs twice: with its blocking calls (they spin, then sleep on a
futex, and the GIL is released while they wait) and with polling receivers
like iceoryx2's.

Then the zero-copy access time of shmring: peek + numpy view + release of a
message already in the ring, for 64 B to 16 MiB (it should not grow with the
size).

Repetitions are interleaved (rep 1 of every transport, then rep 2, ...) and
the table gives the median over repetitions with the range (min-max) next to
it, so a noisy machine shows as a wide range.

    python3 bench/python_bench.py --reps 5 --out bench/results/<machine>/python.md
    python3 bench/python_bench.py --quick          # a smoke run (seconds)
"""

from __future__ import annotations

import argparse
import ctypes
import multiprocessing as mp
import os
import statistics
import sys
import time

import numpy as np

import shmring
from pybench_common import (MiB, VerifyError, available_transports, check, fmt_range, iox2_node,
                            iox2_publisher, iox2_send, iox2_service, machine_line, pattern, pin,
                            poll, write_report)


def seq_of(m) -> int:
    return int.from_bytes(bytes(m[:8]), "little")


def _fill_u64(buffer, seq: int) -> None:
    # A function, so the numpy view is gone before the slot is finished.
    np.frombuffer(buffer, np.uint64).fill(seq)


def _is_u64(buffer, seq: int) -> bool:
    a = np.frombuffer(buffer, np.uint64)
    return bool(a[0] == seq and a[-1] == seq and (a == seq).all())


# ---- transports ---------------------------------------------------------------
#
# Each transport has: rt_setup(size) -> (parent_state, child_args),
# rt_child(*child_args, n, ready) (echo server), rt_ping(parent_state, msg) -> reply,
# tp_setup(size), tp_child(*child_args, n, size, ready) (producer),
# tp_recv(parent_state, seq, size) (receives and verifies one), close(state).


class Shmring:
    name = "shmring"

    def __init__(self):
        self.prefix = f"shmring-pybench-{os.getpid()}"
        self.count = 0

    def _names(self, *suffixes):
        self.count += 1
        return [f"{self.prefix}-{self.count}-{s}" for s in suffixes]

    def rt_setup(self, size):
        ping, pong = self._names("ping", "pong")
        a = shmring.create(ping, capacity=16, slot_size=size)
        b = shmring.create(pong, capacity=16, slot_size=size)
        return (a.producer(), b.consumer(), [ping, pong]), (ping, pong)

    @staticmethod
    def rt_child(ping, pong, n, size, ready):
        rx = shmring.open(ping).consumer()
        tx = shmring.open(pong).producer()
        ready.set()
        for seq in range(n):
            m = rx.pop(timeout=30)
            check(m == pattern(seq, size), f"ping {seq}")
            tx.push(m)

    @staticmethod
    def rt_ping(state, msg):
        tx, rx, _ = state
        tx.push(msg)
        return rx.pop(timeout=30)

    def tp_setup(self, size):
        (data,) = self._names("data")
        seg = shmring.create(data, capacity=1024 if size <= 4096 else 16, slot_size=size)
        return (seg.consumer(), None, [data]), (data,)

    @staticmethod
    def tp_child(data, n, size, ready):
        tx = shmring.open(data).producer()
        ready.set()
        for seq in range(n):
            if size <= 4096:
                tx.push(pattern(seq, size), timeout=30)
            else:
                with tx.claim(timeout=30) as slot:  # written in place
                    _fill_u64(slot, seq)
                    slot.size = size  # written through a view: say how much to publish

    @staticmethod
    def tp_recv(state, seq, size):
        rx = state[0]
        if size <= 4096:
            check(rx.pop(timeout=30) == pattern(seq, size), f"message {seq}")
        else:
            with rx.peek(timeout=30) as msg:  # checked in place
                check(_is_u64(msg, seq), f"message {seq}")

    @staticmethod
    def close(state):
        for name in state[2]:
            shmring.unlink(name, missing_ok=True)


class ShmringPolling(Shmring):
    """shmring with the receivers polling try_pop()/try_peek() in Python, as
    iceoryx2's do: no sleep, so no wake-up, at the price of a busy core."""

    name = "shmring, polling"

    @staticmethod
    def rt_child(ping, pong, n, size, ready):
        rx = shmring.open(ping).consumer()
        tx = shmring.open(pong).producer()
        ready.set()
        for seq in range(n):
            m = poll(rx.try_pop)
            check(m == pattern(seq, size), f"ping {seq}")
            tx.push(m)

    @staticmethod
    def rt_ping(state, msg):
        tx, rx, _ = state
        tx.push(msg)
        return poll(rx.try_pop)

    @staticmethod
    def tp_recv(state, seq, size):
        rx = state[0]
        if size <= 4096:
            check(poll(rx.try_pop) == pattern(seq, size), f"message {seq}")
            return
        with poll(rx.try_peek) as msg:
            check(_is_u64(msg, seq), f"message {seq}")


class MpQueue:
    """A queue between two processes that pickles what it carries; faster-fifo's
    has the same calls."""

    name = "multiprocessing.Queue"

    def rt_setup(self, size):
        ctx = mp.get_context("spawn")
        a, b = ctx.Queue(), ctx.Queue()
        return (a, b), (a, b)

    @staticmethod
    def rt_child(a, b, n, size, ready):
        ready.set()
        for seq in range(n):
            m = a.get(timeout=30)
            check(m == pattern(seq, size), f"ping {seq}")
            b.put(m, timeout=30)

    @staticmethod
    def rt_ping(state, msg):
        state[0].put(msg, timeout=30)
        return state[1].get(timeout=30)

    def tp_setup(self, size):
        q = mp.get_context("spawn").Queue(maxsize=64)
        return (q,), (q,)

    @staticmethod
    def tp_child(q, n, size, ready):
        ready.set()
        for seq in range(n):
            q.put(pattern(seq, size), timeout=30)

    @staticmethod
    def tp_recv(state, seq, size):
        m = state[0].get(timeout=30)
        check(m == pattern(seq, size) if size <= 4096 else _is_u64(m, seq), f"message {seq}")

    @staticmethod
    def close(state):
        pass


class FasterFifo(MpQueue):
    """faster-fifo's queue: bounded by bytes, not by messages."""

    name = "faster-fifo"

    def rt_setup(self, size):
        import faster_fifo

        a, b = faster_fifo.Queue(max_size_bytes=1 << 20), faster_fifo.Queue(max_size_bytes=1 << 20)
        return (a, b), (a, b)

    def tp_setup(self, size):
        import faster_fifo

        q = faster_fifo.Queue(max_size_bytes=max(1 << 20, 16 * (size + 4096)))
        return (q,), (q,)


class Iceoryx2:
    name = "iceoryx2"

    def __init__(self):
        self.prefix = f"shmring-pybench-iox2-{os.getpid()}"
        self.count = 0

    @staticmethod
    def _ports(pub_name, sub_name, size, buffer):
        pub_service = iox2_service(pub_name, size, buffer)
        sub_service = iox2_service(sub_name, size, buffer)
        sub = sub_service.subscriber_builder().buffer_size(buffer).create()
        return iox2_publisher(pub_service), sub, (pub_service, sub_service)

    def rt_setup(self, size):
        self.count += 1
        ping, pong = f"{self.prefix}-{self.count}-ping", f"{self.prefix}-{self.count}-pong"
        pub, sub, keep = self._ports(ping, pong, size, 4)
        return [iox2_node(), pub, sub, keep, False], (ping, pong)

    @staticmethod
    def rt_child(ping, pong, n, size, ready):
        pub, sub, _ = Iceoryx2._ports(pong, ping, size, 4)
        ready.set()
        for seq in range(n):
            sample = poll(sub.receive)
            m = ctypes.string_at(sample.payload_ptr, size)
            sample.delete()
            check(m == pattern(seq, size), f"ping {seq}")
            iox2_send(pub, m)

    @staticmethod
    def rt_ping(state, msg):
        if not state[4]:  # connect to the echo process's subscriber
            state[1].update_connections()
            state[4] = True
        iox2_send(state[1], msg)
        sample = poll(state[2].receive)
        m = ctypes.string_at(sample.payload_ptr, len(msg))
        sample.delete()
        return m

    def tp_setup(self, size):
        self.count += 1
        data = f"{self.prefix}-{self.count}-data"
        service = iox2_service(data, size, 64 if size <= 4096 else 16)
        sub = service.subscriber_builder().buffer_size(64 if size <= 4096 else 16).create()
        return [iox2_node(), service, sub], (data,)

    @staticmethod
    def tp_child(data, n, size, ready):
        pub = iox2_publisher(iox2_service(data, size, 64 if size <= 4096 else 16))
        ready.set()
        for seq in range(n):
            if size <= 4096:
                iox2_send(pub, pattern(seq, size))
            else:  # written in place
                sample = pub.loan_uninit()
                _fill_u64((ctypes.c_uint8 * size).from_address(sample.payload_ptr), seq)
                sample.assume_init().send()

    @staticmethod
    def tp_recv(state, seq, size):
        sample = poll(state[2].receive)
        if size <= 4096:
            got = ctypes.string_at(sample.payload_ptr, size)
            ok = got == pattern(seq, size)
            seq_got = seq_of(got)
        else:  # checked in place
            view = (ctypes.c_uint8 * size).from_address(sample.payload_ptr)
            ok = _is_u64(view, seq)
            seq_got = seq_of(view)
        sample.delete()
        check(ok, f"message {seq}: received one carrying {seq_got}")

    @staticmethod
    def close(state):
        pass


TRANSPORTS = {"shmring": Shmring, "shmring-poll": ShmringPolling, "mpqueue": MpQueue, "faster-fifo": FasterFifo, "iceoryx2": Iceoryx2}


# ---- measurements -------------------------------------------------------------------


CPUS: tuple[int | None, int | None] = (None, None)  # (this process, the peer) when pinning


def _run_child(target, args, cpu=None):
    pin(cpu)
    try:
        target(*args)
    except VerifyError as e:
        print(f"verification failed in the child: {e}", file=sys.stderr)
        sys.exit(1)


def round_trip(t, n: int, warmup: int, size: int = 64) -> list[int]:
    state, child_args = t.rt_setup(size)
    ctx = mp.get_context("spawn")
    ready = ctx.Event()
    p = ctx.Process(target=_run_child,
                    args=(t.rt_child, (*child_args, warmup + n, size, ready), CPUS[1]))
    p.start()
    try:
        check(ready.wait(60), "the echo process did not start")
        times = []
        for seq in range(warmup + n):
            msg = pattern(seq, size)
            t0 = time.perf_counter_ns()
            reply = t.rt_ping(state, msg)
            t1 = time.perf_counter_ns()
            check(reply == msg, f"pong {seq}")
            if seq >= warmup:
                times.append(t1 - t0)
        p.join(60)
        check(p.exitcode == 0, f"the echo process exited with {p.exitcode}")
        return times
    finally:
        if p.is_alive():
            p.kill()
        t.close(state)


def throughput(t, n: int, size: int) -> float:
    """Messages per second, first to last message received, each verified."""
    state, child_args = t.tp_setup(size)
    ctx = mp.get_context("spawn")
    ready = ctx.Event()
    p = ctx.Process(target=_run_child, args=(t.tp_child, (*child_args, n, size, ready), CPUS[1]))
    p.start()
    try:
        check(ready.wait(60), "the producer did not start")
        t.tp_recv(state, 0, size)
        t0 = time.perf_counter()
        for seq in range(1, n):
            t.tp_recv(state, seq, size)
        elapsed = time.perf_counter() - t0
        p.join(60)
        check(p.exitcode == 0, f"the producer exited with {p.exitcode}")
        return (n - 1) / elapsed
    finally:
        if p.is_alive():
            p.kill()
        t.close(state)


def zero_copy_access(size: int, n: int) -> float:
    """Median ns of peek + numpy view + release of a message already in the ring."""
    name = f"shmring-pybench-zc-{os.getpid()}-{size}"
    seg = shmring.create(name, capacity=2, slot_size=size)
    try:
        tx, rx = seg.producer(), seg.consumer()
        payload = np.zeros(size, np.uint8)
        times = []
        for seq in range(n):
            payload[:8] = np.frombuffer(seq.to_bytes(8, "little"), np.uint8)
            tx.push(payload)
            t0 = time.perf_counter_ns()
            with rx.try_peek() as msg:
                a = msg.array
                first = int(a[0])  # touch it
                del a
            t1 = time.perf_counter_ns()
            check(first == seq & 0xFF, f"zero-copy message {seq}")
            times.append(t1 - t0)
        return statistics.median(times)
    finally:
        shmring.unlink(name, missing_ok=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--quick", action="store_true", help="a smoke run with few messages")
    ap.add_argument("--transports", default=",".join(TRANSPORTS),
                    help="comma-separated subset of " + ", ".join(TRANSPORTS))
    ap.add_argument("--scale", type=float, default=1.0,
                    help="multiplies the message counts (default 1: 20000 round trips, 200000 x "
                         "64 B, 2000 x 1 MiB per repetition)")
    ap.add_argument("--no-pin", action="store_true",
                    help="do not pin this process and its peer to two different CPUs")
    ap.add_argument("--one-core", action="store_true",
                    help="pin this process and its peer to the same CPU (a container with one "
                         "CPU, an oversubscribed host): a spin cannot succeed there")
    ap.add_argument("--out", help="also write the report (markdown) here")
    a = ap.parse_args()
    n_rt, n_64, n_1m, warm = (20000, 200000, 2000, 2000) if not a.quick else (500, 2000, 20, 100)
    n_rt, n_64, n_1m, warm = (max(10, int(n * a.scale)) for n in (n_rt, n_64, n_1m, warm))
    global CPUS
    allowed = sorted(os.sched_getaffinity(0))
    if a.one_core:
        CPUS = (allowed[-1], allowed[-1])
        pin(CPUS[0])
    elif not a.no_pin and len(allowed) >= 2:
        # Two processes that sleep and wake each other tend to be placed on
        # one CPU by the scheduler, where a spinning waiter then delays its
        # peer; the C++ benchmarks pin too.
        CPUS = (allowed[0], allowed[1])
        pin(CPUS[0])
    keys = available_transports(ap, a.transports, TRANSPORTS,
                                {"faster-fifo": "faster_fifo", "iceoryx2": "iceoryx2"})
    transports = [TRANSPORTS[key]() for key in keys]

    results = {t.name: {"rt": [], "rt99": [], "tp64": [], "tp1m": []} for t in transports}
    failures = {t.name: [] for t in transports}

    def attempt(t, what, fn):
        try:
            return fn()
        except VerifyError as e:  # reported, not hidden: the table says how often
            failures[t.name].append(f"{what}: {e}")
            print(f"{t.name}: {what}: VERIFICATION FAILED: {e}", flush=True)
            return None

    for rep in range(a.reps):
        for t in transports:
            r = results[t.name]
            times = attempt(t, "round trip", lambda: round_trip(t, n_rt, warm))
            if times:
                r["rt"].append(statistics.median(times))
                r["rt99"].append(float(np.percentile(times, 99)))
            for key, size, n in (("tp64", 64, n_64), ("tp1m", MiB, n_1m)):
                v = attempt(t, f"{size} B throughput", lambda: throughput(t, n, size))
                if v is not None:
                    r[key].append(v)
            last = lambda k, f: f(r[k][-1]) if r[k] else "-"  # noqa: E731
            print(f"rep {rep + 1}/{a.reps} {t.name:22s} rt p50 {last('rt', lambda v: f'{v / 1e3:8.1f}')} us  "
                  f"64 B {last('tp64', lambda v: f'{v / 1e6:6.3f}')} M msg/s  "
                  f"1 MiB {last('tp1m', lambda v: f'{v * MiB / 1e9:6.2f}')} GB/s", flush=True)
    zc_sizes = [64, 64 * 1024, MiB, 16 * MiB]
    zc = {s: [zero_copy_access(s, 200 if a.quick else 2000) for _ in range(a.reps)] for s in zc_sizes}

    us = lambda v: f"{v / 1e3:.1f} us"  # noqa: E731
    mps = lambda v: f"{v / 1e6:.3f} M/s"  # noqa: E731
    gbs = lambda v: f"{v * MiB / 1e9:.2f} GB/s"  # noqa: E731
    lines = [
        f"{machine_line()}; median of {a.reps} interleaved repetitions (range min - max); per repetition "
        f"{n_rt:,} round trips, {n_64:,} x 64 B, {n_1m:,} x 1 MiB; "
        + (f"this process on CPU {CPUS[0]}, its peer on CPU {CPUS[1]}" if CPUS[0] is not None
           else "not pinned"),
        "",
        "| transport | 64 B round trip p50 | p99 | 64 B throughput | 1 MiB throughput |",
        "|---|---|---|---|---|",
    ]
    for t in transports:
        r = results[t.name]
        lines.append(f"| {t.name} | {fmt_range(r['rt'], us)} | {fmt_range(r['rt99'], us)} | "
                     f"{fmt_range(r['tp64'], mps)} | {fmt_range(r['tp1m'], gbs)} |")
    for t in transports:
        if failures[t.name]:
            lines += ["", f"{t.name}: verification failed in {len(failures[t.name])} measurement(s), "
                      f"left out of the table: " + "; ".join(failures[t.name])]
    lines += ["", "shmring zero-copy access (peek + numpy view + release, message in the ring):", "",
              "| message | median |", "|---|---|"]
    for s in zc_sizes:
        label = f"{s // MiB} MiB" if s >= MiB else (f"{s // 1024} KiB" if s >= 1024 else f"{s} B")
        lines.append(f"| {label} | {fmt_range(zc[s], us)} |")
    write_report("\n".join(lines), a.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
