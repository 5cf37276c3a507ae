#!/usr/bin/env python3
"""Python broadcast benchmark: shmring's broadcast ring (kind="broadcast",
reliable) against iceoryx2's publish/subscribe, one publisher and N
subscriber processes, in one run.

For each transport and subscriber count:
  throughput   64 B messages from the publisher (this process) to N
               subscriber processes; every subscriber checks every message
               (its sequence number repeated over all 64 bytes, compared
               byte for byte). Messages per second per subscriber, from the
               first message to the moment the last subscriber has checked
               the last one (time.perf_counter, one clock for all processes).
  round trip   a 64 B ping through the fan-out; subscriber 0 checks it and
               sends it back over a one-to-one return channel (shmring: an
               SPSC ring; iceoryx2: a second service); the other subscribers
               check every ping too. One ping in flight.

Nothing may be lost: shmring's ring is reliable (the publisher waits for the
slowest subscriber); iceoryx2 runs without safe overflow and with the
RetryUntilDelivered back-pressure, so its publisher waits too. iceoryx2's
Python binding has no blocking receive without an event service, so its
subscribers poll; shmring runs twice, with its blocking calls (spin, then a
futex sleep, the GIL released) and polling like iceoryx2.

The publisher is pinned to the first CPU this process may use, subscriber i
to the (1 + i)-th (modulo: with fewer CPUs than processes some share one).
Repetitions are interleaved; the table gives the median and the range.

    python3 bench/python_broadcast_bench.py --reps 5 --out bench/results/<machine>/python-broadcast.md
    python3 bench/python_broadcast_bench.py --quick        # a smoke run (seconds)
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
from pybench_common import (VerifyError, available_transports, check, fmt_range, iox2_node,
                            iox2_publisher, iox2_send, iox2_service, machine_line, pattern, pin,
                            poll, write_report)

SIZE = 64
CPUS: list[int | None] = [None]


def cpu_for(agent: int) -> int | None:
    """Agent 0 is the publisher, agent 1 + i subscriber i."""
    return None if CPUS[0] is None else CPUS[agent % len(CPUS)]


# ---- transports -----------------------------------------------------------------
#
# setup(n_subs, echo) -> (state, child_args); pub_connect(state, n_subs) waits until
# every subscriber is connected; send(state, msg); reply(state) -> bytes;
# sub_open(*child_args, index) -> (rx, tx_back or None); sub_recv(rx) -> bytes;
# sub_echo(tx_back, msg); close(state).


class Shmring:
    name = "shmring"
    poll = False

    def __init__(self):
        self.prefix = f"shmring-pybcast-{os.getpid()}"
        self.count = 0

    def setup(self, n_subs, echo):
        self.count += 1
        ring, back = f"{self.prefix}-{self.count}-ring", f"{self.prefix}-{self.count}-back"
        seg = shmring.create(ring, kind="broadcast", subscribers=n_subs, capacity=1024, slot_size=SIZE)
        names = [ring]
        rx = None
        if echo:
            back_seg = shmring.create(back, capacity=16, slot_size=SIZE)
            rx = back_seg.consumer()
            names.append(back)
        return {"tx": seg.producer(), "rx": rx, "names": names, "keep": seg}, (ring, back if echo else None)

    def pub_connect(self, state, n_subs):
        pass  # subscribers attach before they say they are ready

    @staticmethod
    def send(state, msg):
        state["tx"].push(msg, timeout=30)

    def reply(self, state):
        return self.recv(state["rx"])

    @staticmethod
    def sub_open(ring, back, index):
        rx = shmring.open(ring).subscriber()  # joins at "next": everything published after
        tx = shmring.open(back).producer() if back is not None and index == 0 else None
        return rx, tx

    def recv(self, rx):
        return poll(rx.try_pop) if self.poll else rx.pop(timeout=30)

    @staticmethod
    def sub_echo(tx, msg):
        tx.push(msg, timeout=30)

    @staticmethod
    def close(state):
        for name in state["names"]:
            shmring.unlink(name, missing_ok=True)


class ShmringPolling(Shmring):
    name = "shmring, polling"
    poll = True


class Iceoryx2:
    name = "iceoryx2"
    def __init__(self):
        self.prefix = f"shmring-pybcast-iox2-{os.getpid()}"
        self.count = 0

    @staticmethod
    def _service(name, n_subs):
        return iox2_service(name, SIZE, 64, max_subscribers=max(n_subs, 1))

    @staticmethod
    def _recv(sub):
        sample = poll(sub.receive)  # no blocking receive without an event service
        m = ctypes.string_at(sample.payload_ptr, SIZE)
        sample.delete()
        return m

    def setup(self, n_subs, echo):
        self.count += 1
        ring, back = f"{self.prefix}-{self.count}-ring", f"{self.prefix}-{self.count}-back"
        service = self._service(ring, n_subs)
        state = {"node": iox2_node(), "service": service, "tx": iox2_publisher(service), "rx": None}
        if echo:
            back_service = self._service(back, 1)
            state["back_service"] = back_service
            state["rx"] = back_service.subscriber_builder().buffer_size(64).create()
        return state, (ring, back if echo else None, n_subs)

    def pub_connect(self, state, n_subs):
        deadline = time.monotonic() + 30
        while state["service"].dynamic_config.number_of_subscribers < n_subs:
            check(time.monotonic() < deadline, "iceoryx2: subscribers did not connect")
            time.sleep(0.001)
        state["tx"].update_connections()

    def send(self, state, msg):
        iox2_send(state["tx"], msg)

    def reply(self, state):
        return self._recv(state["rx"])

    @staticmethod
    def sub_open(ring, back, n_subs, index):
        rx = Iceoryx2._service(ring, n_subs).subscriber_builder().buffer_size(64).create()
        tx = None
        if back is not None and index == 0:
            back_service = Iceoryx2._service(back, 1)
            tx = iox2_publisher(back_service)
            deadline = time.monotonic() + 30
            while back_service.dynamic_config.number_of_subscribers < 1:
                check(time.monotonic() < deadline, "iceoryx2: the pinger did not connect")
                time.sleep(0.001)
            tx.update_connections()
            tx = (tx, back_service)
        return rx, tx

    def recv(self, rx):
        return self._recv(rx)

    @staticmethod
    def sub_echo(tx, msg):
        iox2_send(tx[0], msg)

    @staticmethod
    def close(state):
        pass


TRANSPORTS = {"shmring": Shmring, "shmring-poll": ShmringPolling, "iceoryx2": Iceoryx2}


# ---- the subscriber process ---------------------------------------------------------


def subscriber(transport_key, child_args, index, cpu, n, warmup, echo, ready, barrier, results):
    pin(cpu)
    t = TRANSPORTS[transport_key]()
    try:
        rx, tx = t.sub_open(*child_args, index)
        ready.release()
        for seq in range(warmup + n):
            if seq == warmup and not echo:
                barrier.wait(60)  # the publisher starts its clock after this
            m = t.recv(rx)
            check(m == pattern(seq, SIZE), f"subscriber {index}: message {seq} is not the expected one")
            if tx is not None:
                t.sub_echo(tx, m)
        results.put((index, time.perf_counter(), None))
    except Exception as e:  # reported to the publisher, which fails the measurement
        results.put((index, None, f"{type(e).__name__}: {e}"))
        sys.exit(1)


def run_fanout(key, n_subs, n, warmup, echo):
    """Throughput: messages per second per subscriber. Round trip (echo):
    the list of round-trip times in ns."""
    t = TRANSPORTS[key]()
    state, child_args = t.setup(n_subs, echo)
    ctx = mp.get_context("spawn")
    ready = ctx.Semaphore(0)
    barrier = ctx.Barrier(n_subs + 1)
    results = ctx.Queue()
    procs = [ctx.Process(target=subscriber,
                         args=(key, child_args, i, cpu_for(1 + i), n, warmup, echo, ready, barrier,
                               results))
             for i in range(n_subs)]
    for p in procs:
        p.start()
    try:
        for _ in range(n_subs):
            check(ready.acquire(timeout=60), "a subscriber did not start")
        t.pub_connect(state, n_subs)
        times = []
        if echo:
            for seq in range(warmup + n):
                msg = pattern(seq, SIZE)
                t0 = time.perf_counter_ns()
                t.send(state, msg)
                back = t.reply(state)
                t1 = time.perf_counter_ns()
                check(back == msg, f"reply {seq} is not the ping")
                if seq >= warmup:
                    times.append(t1 - t0)
        else:
            for seq in range(warmup):
                t.send(state, pattern(seq, SIZE))
            barrier.wait(60)
            start = time.perf_counter()
            for seq in range(warmup, warmup + n):
                t.send(state, pattern(seq, SIZE))
        ends = []
        for _ in range(n_subs):
            index, end, error = results.get(timeout=120)
            check(error is None, f"subscriber {index}: {error}")
            ends.append(end)
        for p in procs:
            p.join(60)
            check(p.exitcode == 0, f"a subscriber exited with {p.exitcode}")
        return times if echo else n / (max(ends) - start)
    finally:
        for p in procs:
            if p.is_alive():
                p.kill()
        t.close(state)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--quick", action="store_true", help="a smoke run with few messages")
    ap.add_argument("--subscribers", default="1,2,4,8", help="subscriber counts (default 1,2,4,8)")
    ap.add_argument("--transports", default=",".join(TRANSPORTS),
                    help="comma-separated subset of " + ", ".join(TRANSPORTS))
    ap.add_argument("--scale", type=float, default=1.0,
                    help="multiplies the message counts (default 1: 100000 x 64 B and 10000 round "
                         "trips per repetition)")
    ap.add_argument("--no-pin", action="store_true", help="do not pin the processes")
    ap.add_argument("--out", help="also write the report (markdown) here")
    a = ap.parse_args()
    n_tp, n_rt, warm = (100000, 10000, 1000) if not a.quick else (2000, 200, 50)
    n_tp, n_rt, warm = (max(10, int(v * a.scale)) for v in (n_tp, n_rt, warm))
    counts = [int(c) for c in a.subscribers.split(",")]
    global CPUS
    allowed = sorted(os.sched_getaffinity(0))
    if not a.no_pin and len(allowed) >= 2:
        CPUS = allowed
        pin(CPUS[0])
    keys = available_transports(ap, a.transports, TRANSPORTS, {"iceoryx2": "iceoryx2"})

    res = {(k, c): {"tp": [], "rt": [], "rt99": []} for k in keys for c in counts}
    failures = []
    for rep in range(a.reps):
        for c in counts:
            for key in keys:
                r = res[(key, c)]
                try:
                    r["tp"].append(run_fanout(key, c, n_tp, warm, echo=False))
                    times = run_fanout(key, c, n_rt, warm, echo=True)
                    r["rt"].append(statistics.median(times))
                    r["rt99"].append(float(np.percentile(times, 99)))
                except VerifyError as e:  # a wrong message or a failed subscriber: reported, not hidden
                    failures.append(f"{key}, {c} subscribers: {e}")
                    print(f"{key}, {c} subscribers: FAILED: {e}", flush=True)
                    continue
                print(f"rep {rep + 1}/{a.reps} {c} sub {TRANSPORTS[key].name:18s} "
                      f"64 B {r['tp'][-1] / 1e6:6.3f} M msg/s per subscriber  "
                      f"rt p50 {r['rt'][-1] / 1e3:7.1f} us", flush=True)

    us = lambda v: f"{v / 1e3:.1f} us"  # noqa: E731
    mps = lambda v: f"{v / 1e6:.3f} M/s"  # noqa: E731
    lines = [
        f"{machine_line()}; shmring "
        f"{getattr(shmring, '__version__', '?')}; median of {a.reps} interleaved repetitions (range "
        f"min - max); per repetition {n_tp:,} x 64 B and {n_rt:,} round trips after {warm:,} "
        "warm-up messages; "
        + (f"publisher on CPU {CPUS[0]}, subscriber i on CPU list entry 1 + i of {CPUS}"
           if CPUS[0] is not None else "not pinned"),
        "",
        "| transport | subscribers | 64 B per subscriber | 64 B round trip p50 | p99 |",
        "|---|---:|---|---|---|",
    ]
    for c in counts:
        for key in keys:
            r = res[(key, c)]
            lines.append(f"| {TRANSPORTS[key].name} | {c} | {fmt_range(r['tp'], mps)} | "
                         f"{fmt_range(r['rt'], us)} | {fmt_range(r['rt99'], us)} |")
    if "iceoryx2" in keys:
        lines += ["", "shmring / iceoryx2, medians (throughput: higher is better for shmring; round "
                  "trip: lower is better):", "",
                  "| transport | subscribers | 64 B msg/s | round trip p50 |", "|---|---:|---:|---:|"]
        for c in counts:
            theirs = res[("iceoryx2", c)]
            for key in keys:
                mine = res[(key, c)]
                if key == "iceoryx2" or not (mine["tp"] and theirs["tp"] and mine["rt"] and theirs["rt"]):
                    continue
                lines.append(f"| {TRANSPORTS[key].name} | {c} | "
                             f"{statistics.median(mine['tp']) / statistics.median(theirs['tp']):.2f} | "
                             f"{statistics.median(mine['rt']) / statistics.median(theirs['rt']):.2f} |")
    if failures:
        lines += ["", f"{len(failures)} measurement(s) failed (a message not the expected one, or a "
                  "subscriber that failed), left out of the table: "
                  + "; ".join(failures)]
    write_report("\n".join(lines), a.out)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
