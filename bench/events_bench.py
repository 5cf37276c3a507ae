#!/usr/bin/env python3
"""What waiting through the event descriptor costs, C++ and Python, in one run.

Each repetition runs, in this order, between two processes pinned to two CPUs:

  C++ (shmring_event_rtt_bench --reps 1 --json, bench/event_rtt_bench.cpp):
    the cache-line floor; a 64 B round trip through the futex (blocking pops
    that never spin) and through epoll + event_fd(), answered at once and
    with both peers asleep, next to the kernel's floors (a futex ping-pong,
    a pipe ping-pong in epoll_wait); the publisher's rate
    with and without event_fd() opened on the consumer, in one thread and
    streaming to a consumer process (which spins, or waits in epoll or in
    pop()); the floor again
  Python:
    asyncio  64 B round trip, ``await tx.push_async`` / ``await rx.pop_async``
             on both sides (each wait is loop.add_reader on event_fd())
    blocking 64 B round trip, ``tx.push`` / ``rx.pop`` (spin, then futex), for
             reference
    pipes    asyncio's own floor, no shmring: a 64 B round trip over two pipes,
             each wait add_reader / await / remove_reader as pop_async's, and
             with one reader kept for the whole run

Every message is its sequence number repeated, checked on both sides.
Repetitions are interleaved (rep 1 of everything, then rep 2, ...); the
report gives the median over repetitions with the range (min-max), the
ratios against their targets, the machine and the load average around each
repetition (a slow repetition shows as a wide range and a high load: run
again).

    python3 bench/events_bench.py --reps 5 --out bench/results/<machine>/events.md
    python3 bench/events_bench.py --quick          # a smoke run (seconds)

The Python rows need the shmring module (pip install .); without it they are
reported as not measured and the C++ rows still run.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import multiprocessing as mp
import os
import platform
import shlex
import statistics
import subprocess
import sys
import time

try:
    import shmring
except ImportError:  # the C++ rows run without it
    shmring = None

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SIZE = 64


def pattern(seq: int) -> bytes:
    return seq.to_bytes(8, "little") * (SIZE // 8)


def bench_cpus() -> tuple[int, int]:
    """SHMRING_BENCH_CPUS ("a,b"), as the C++ benchmarks read it; else the
    first two CPUs this process may use."""
    env = os.environ.get("SHMRING_BENCH_CPUS", "")
    if env:
        cpus: list[int] = []
        for part in env.split(","):
            first, _, last = part.partition("-")
            cpus.extend(range(int(first), int(last or first) + 1))
    else:
        cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        cpus = cpus * 2
    return cpus[0], cpus[1]


def load_average() -> str:
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


# ---- the Python round trips -------------------------------------------------------------


async def _echo_async(rx, tx, n: int) -> None:
    for seq in range(n):
        msg = await rx.pop_async()
        if msg != pattern(seq):
            raise AssertionError(f"echo: ping {seq} arrived damaged or out of order")
        await tx.push_async(msg)


def _echo_blocking(rx, tx, n: int) -> None:
    for seq in range(n):
        msg = rx.pop(timeout=10)
        if msg != pattern(seq):
            raise AssertionError(f"echo: ping {seq} arrived damaged or out of order")
        tx.push(msg, timeout=10)


def _echo_child(mode: str, ping: str, pong: str, n: int, cpu: int, ready) -> None:
    os.sched_setaffinity(0, {cpu})
    with shmring.open(ping) as ping_seg, shmring.open(pong) as pong_seg:
        rx, tx = ping_seg.consumer(), pong_seg.producer()
        ready.set()
        if mode == "asyncio":
            asyncio.run(_echo_async(rx, tx, n))
        else:
            _echo_blocking(rx, tx, n)
        rx.close()
        tx.close()


async def _ping_async(tx, rx, total: int, warmup: int) -> list[int]:
    times = []
    for seq in range(total):
        msg = pattern(seq)
        t0 = time.perf_counter_ns()
        await tx.push_async(msg)
        reply = await rx.pop_async()
        t1 = time.perf_counter_ns()
        if reply != msg:
            raise AssertionError(f"pong {seq} came back damaged or out of order")
        if seq >= warmup:
            times.append(t1 - t0)
    return times


def _ping_blocking(tx, rx, total: int, warmup: int) -> list[int]:
    times = []
    for seq in range(total):
        msg = pattern(seq)
        t0 = time.perf_counter_ns()
        tx.push(msg, timeout=10)
        reply = rx.pop(timeout=10)
        t1 = time.perf_counter_ns()
        if reply != msg:
            raise AssertionError(f"pong {seq} came back damaged or out of order")
        if seq >= warmup:
            times.append(t1 - t0)
    return times


def python_round_trip(mode: str, rounds: int, cpus: tuple[int, int]) -> dict:
    """p50/p99 (ns) of `rounds` 64 B round trips, this process pinging."""
    warmup = max(1, rounds // 20)
    total = warmup + rounds
    stem = f"shmring-evbench-{os.getpid()}-{mode}"
    ping_seg = shmring.create(stem + "-ping", capacity=8, slot_size=SIZE, unlink_on_close=True)
    pong_seg = shmring.create(stem + "-pong", capacity=8, slot_size=SIZE, unlink_on_close=True)
    ctx = mp.get_context("spawn")
    ready = ctx.Event()
    child = ctx.Process(target=_echo_child,
                        args=(mode, stem + "-ping", stem + "-pong", total, cpus[1], ready))
    try:
        os.sched_setaffinity(0, {cpus[0]})
        tx, rx = ping_seg.producer(), pong_seg.consumer()
        child.start()
        if not ready.wait(60):
            raise RuntimeError("the echo process did not start")
        if mode == "asyncio":
            times = asyncio.run(_ping_async(tx, rx, total, warmup))
        else:
            times = _ping_blocking(tx, rx, total, warmup)
        child.join(60)
        if child.exitcode != 0:
            raise RuntimeError(f"the echo process exited with {child.exitcode}")
        tx.close()
        rx.close()
    finally:
        if child.is_alive():
            child.kill()
        ping_seg.close()
        pong_seg.close()
    times.sort()
    return {"p50_ns": times[len(times) // 2], "p99_ns": times[int(len(times) * 0.99)]}


# ---- asyncio's own floor ------------------------------------------------------------------


async def _wait_readable(loop, fd: int) -> None:
    """One wait as pop_async makes it: add_reader, await, remove_reader."""
    ready = loop.create_future()
    loop.add_reader(fd, ready.set_result, None)
    try:
        await ready
    finally:
        loop.remove_reader(fd)


async def _pipe_echo(r: int, w: int, total: int, kept: bool) -> None:
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[bytes] = asyncio.Queue()
    if kept:
        loop.add_reader(r, lambda: queue.put_nowait(os.read(r, SIZE)))
    for seq in range(total):
        if kept:
            msg = await queue.get()
        else:
            await _wait_readable(loop, r)
            msg = os.read(r, SIZE)
        if msg != pattern(seq):
            raise AssertionError(f"pipe echo: ping {seq} arrived damaged or out of order")
        os.write(w, msg)


async def _pipe_ping(r: int, w: int, total: int, warmup: int, kept: bool) -> list[int]:
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[bytes] = asyncio.Queue()
    if kept:
        loop.add_reader(r, lambda: queue.put_nowait(os.read(r, SIZE)))
    times = []
    for seq in range(total):
        msg = pattern(seq)
        t0 = time.perf_counter_ns()
        os.write(w, msg)
        if kept:
            reply = await queue.get()
        else:
            await _wait_readable(loop, r)
            reply = os.read(r, SIZE)
        t1 = time.perf_counter_ns()
        if reply != msg:
            raise AssertionError(f"pipe pong {seq} came back damaged or out of order")
        if seq >= warmup:
            times.append(t1 - t0)
    return times


def pipe_round_trip(kept: bool, rounds: int, cpus: tuple[int, int]) -> dict:
    """asyncio's own floor: a 64 B round trip over two pipes (no shmring), each
    wait add_reader / await / remove_reader as pop_async's (kept=False), or
    one reader kept for the whole run feeding a queue (kept=True)."""
    warmup = max(1, rounds // 20)
    total = warmup + rounds
    ping_r, ping_w = os.pipe()
    pong_r, pong_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            os.sched_setaffinity(0, {cpus[1]})
            asyncio.run(_pipe_echo(ping_r, pong_w, total, kept))
            code = 0
        finally:
            os._exit(code)
    try:
        os.sched_setaffinity(0, {cpus[0]})
        times = asyncio.run(_pipe_ping(pong_r, ping_w, total, warmup, kept))
    finally:
        for fd in (ping_r, ping_w, pong_r, pong_w):
            os.close(fd)
        _, status = os.waitpid(pid, 0)
    if status != 0:
        raise RuntimeError(f"the pipe echo process ended with status {status}")
    times.sort()
    return {"p50_ns": times[len(times) // 2], "p99_ns": times[int(len(times) * 0.99)]}


# ---- the run ---------------------------------------------------------------------------------


def cpp_rep(binary: str, args: argparse.Namespace, cpus: tuple[int, int]) -> dict:
    cmd = [binary, "--reps", "1", "--json"]
    cmd += ["--quick"] if args.quick else ["--rounds", str(args.rounds), "--messages", str(args.messages)]
    env = dict(os.environ, SHMRING_BENCH_CPUS=f"{cpus[0]},{cpus[1]}")
    out = subprocess.run(cmd, env=env, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def lscpu() -> dict[str, str]:
    try:
        out = subprocess.run(["lscpu"], check=True, capture_output=True, text=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return {}
    fields = {}
    for line in out.splitlines():
        key, _, value = line.partition(":")
        fields[key.strip()] = value.strip()
    return fields


def git_commit() -> str:
    try:
        return subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"], check=True,
                              capture_output=True, text=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def spread(values: list[float]) -> tuple[float, float, float]:
    return statistics.median(values), min(values), max(values)


def us(values: list[float]) -> str:
    med, lo, hi = spread(values)
    return f"{med / 1e3:.2f} ({lo / 1e3:.2f}-{hi / 1e3:.2f})"


def mps(values: list[float]) -> str:
    med, lo, hi = spread(values)
    return f"{med / 1e6:.2f} ({lo / 1e6:.2f}-{hi / 1e6:.2f})"


def report(reps: list[dict], args: argparse.Namespace, cpus: tuple[int, int], command: str) -> str:
    info = lscpu()
    first = reps[0]["cpp"]
    lines = []
    w = lines.append
    w("# Event descriptor costs\n")
    w(f"Machine: {info.get('Model name', first['cpu_model'])}, "
      f"{info.get('CPU(s)', first['cpus_online'])} CPUs"
      f"{' (' + info['Hypervisor vendor'] + ' guest)' if 'Hypervisor vendor' in info else ''}; "
      f"kernel {platform.release()}; Python {platform.python_version()}; commit {git_commit()}; "
      f"{datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%dT%H:%M:%SZ')}.\n")
    w(f"Two processes pinned to CPUs {cpus[0]} and {cpus[1]}; {len(reps)} interleaved "
      f"repetitions, median (min-max). Round trips per measurement: C++ "
      f"{first['rounds']}, Python {args.py_rounds if not args.quick else 300}; "
      f"publisher rates: {first['messages']} messages.\n")
    w("```sh")
    w(command)
    w("```\n")
    w("## Round trips, 64 B\n")
    w("| path | p50 us | p99 us | sleeps per round trip |")
    w("|---|---:|---:|---:|")

    def lat_row(name: str, get) -> None:
        p50 = [get(r)["p50_ns"] for r in reps if get(r) is not None]
        p99 = [get(r)["p99_ns"] for r in reps if get(r) is not None]
        sleeps = [get(r).get("sleeps", -1) for r in reps if get(r) is not None]
        slept = f"{statistics.median(sleeps):.2f}" if sleeps and min(sleeps) >= 0 else ""
        if p50:
            w(f"| {name} | {us(p50)} | {us(p99)} | {slept} |")
        else:
            w(f"| {name} | not measured | | |")

    lat_row("cache-line ping-pong (floor), before", lambda r: r["cpp"]["floor_before"])
    lat_row("futex wait/wake ping-pong, no ring (floor)", lambda r: r["cpp"]["futex_floor"])
    lat_row("C++ futex: blocking pops that never spin", lambda r: r["cpp"]["futex"])
    lat_row("C++ futex, both peers asleep (50 us hold taken off)", lambda r: r["cpp"]["futex_asleep"])
    lat_row("pipe + epoll_wait ping-pong, no ring (floor)", lambda r: r["cpp"]["pipe_floor"])
    lat_row("C++ epoll_wait on event_fd(), try_pop until would_block", lambda r: r["cpp"]["epoll"])
    lat_row("C++ epoll, both peers asleep (50 us hold taken off)", lambda r: r["cpp"]["epoll_asleep"])
    lat_row("Python asyncio: await push_async / pop_async", lambda r: r.get("asyncio"))
    lat_row("Python blocking: push / pop (spin, then futex)", lambda r: r.get("blocking"))
    lat_row("asyncio over two pipes, add_reader per wait (no shmring)", lambda r: r["pipe_asyncio"])
    lat_row("asyncio over two pipes, one reader kept (no shmring)", lambda r: r["pipe_asyncio_kept"])
    lat_row("cache-line ping-pong (floor), after", lambda r: r["cpp"]["floor_after"])
    w("")
    w("## Publisher with nobody waiting, 64 B try_push + try_pop\n")
    w("| where | no descriptor, M msg/s | event_fd() opened on the consumer, M msg/s | ratio |")
    w("|---|---:|---:|---:|")
    for name, plain, fd in (("one thread (push, then pop)", "same_thread_plain", "same_thread_fd"),
                            ("one thread, the descriptor armed by a try that found nothing, "
                             "never waited on", "same_thread_plain", "same_thread_armed"),
                            ("two processes, both spinning", "stream_plain", "stream_fd")):
        a = [r["cpp"][plain] for r in reps]
        b = [r["cpp"][fd] for r in reps]
        w(f"| {name} | {mps(a)} | {mps(b)} | {statistics.median(b) / statistics.median(a):.2f}x |")
    w("")
    w("Streaming to a consumer process (the producer spins on a full ring), by how the "
      "consumer waits when the ring is empty:\n")
    w("| consumer | M msg/s |")
    w("|---|---:|")
    for name, key in (("spins on try_pop, no descriptor", "stream_plain"),
                      ("spins on try_pop, event_fd() opened, never waited on", "stream_fd"),
                      ("epoll_wait on event_fd(), try_pop until would_block", "stream_epoll"),
                      ("pop() (spin, then futex)", "stream_blocking")):
        w(f"| {name} | {mps([r['cpp'][key] for r in reps])} |")
    w("")
    w("## Against the targets\n")
    w("| ratio | measured | target |")
    w("|---|---:|---|")
    med = statistics.median
    epoll = med([r["cpp"]["epoll"]["p50_ns"] for r in reps])
    futex = med([r["cpp"]["futex"]["p50_ns"] for r in reps])
    w(f"| epoll round trip p50 / futex round trip p50 | {epoll / futex:.2f}x | <= 2x |")
    epoll_asleep = med([r["cpp"]["epoll_asleep"]["p50_ns"] for r in reps])
    futex_asleep = med([r["cpp"]["futex_asleep"]["p50_ns"] for r in reps])
    w(f"| the same, both peers asleep | {epoll_asleep / futex_asleep:.2f}x | <= 2x |")
    aio = [r["asyncio"]["p50_ns"] for r in reps if r.get("asyncio")]
    w(f"| Python asyncio round trip p50 | "
      f"{f'{med(aio) / 1e3:.1f} us' if aio else 'not measured'} | <= 20 us (2 cores) |")
    pipe = med([r["pipe_asyncio"]["p50_ns"] for r in reps])
    if aio:
        w(f"| Python asyncio round trip p50 / asyncio over pipes p50 | {med(aio) / pipe:.2f}x | |")
    for name, plain, fd in (("one thread", "same_thread_plain", "same_thread_fd"),
                            ("one thread, armed and never waited on", "same_thread_plain",
                             "same_thread_armed"),
                            ("two processes", "stream_plain", "stream_fd")):
        ratio = med([r["cpp"][fd] for r in reps]) / med([r["cpp"][plain] for r in reps])
        w(f"| publisher rate with / without descriptor, {name} | {ratio:.2f}x | ~1.0x |")
    w("")
    w("## Load average (1, 5, 15 min) around each repetition\n")
    for i, r in enumerate(reps, 1):
        w(f"- rep {i}: before {r['load_before']}, after {r['load_after']}")
    return "\n".join(lines) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bin", default=os.path.join(ROOT, "build", "bench", "shmring_event_rtt_bench"),
                    help="the C++ program (default: build/bench/shmring_event_rtt_bench)")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=20000, help="C++ round trips per measurement")
    ap.add_argument("--messages", type=int, default=2000000,
                    help="C++ messages per publisher-rate measurement")
    ap.add_argument("--py-rounds", type=int, default=20000, help="Python round trips per measurement")
    ap.add_argument("--quick", action="store_true", help="one short repetition (a smoke run)")
    ap.add_argument("--out", help="also write the report (markdown) here")
    args = ap.parse_args()
    if args.quick:
        args.reps = 1
    if not os.access(args.bin, os.X_OK):
        print(f"events_bench: {args.bin} is not an executable (build the target "
              "shmring_event_rtt_bench, or pass --bin)", file=sys.stderr)
        return 2
    cpus = bench_cpus()
    py_rounds = 300 if args.quick else args.py_rounds
    command = "python3 bench/events_bench.py " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    reps = []
    for i in range(args.reps):
        rep = {"load_before": load_average()}
        rep["cpp"] = cpp_rep(args.bin, args, cpus)
        rep["pipe_asyncio"] = pipe_round_trip(False, py_rounds, cpus)
        rep["pipe_asyncio_kept"] = pipe_round_trip(True, py_rounds, cpus)
        if shmring is not None:
            rep["asyncio"] = python_round_trip("asyncio", py_rounds, cpus)
            rep["blocking"] = python_round_trip("blocking", py_rounds, cpus)
        rep["load_after"] = load_average()
        reps.append(rep)
        print(f"rep {i + 1}/{args.reps}: futex {rep['cpp']['futex']['p50_ns'] / 1e3:.2f} us, "
              f"epoll {rep['cpp']['epoll']['p50_ns'] / 1e3:.2f} us"
              + (f", asyncio {rep['asyncio']['p50_ns'] / 1e3:.2f} us" if "asyncio" in rep else "")
              + f" (load {rep['load_before']} -> {rep['load_after']})", file=sys.stderr)
    text = report(reps, args, cpus, command)
    if shmring is None:
        text += "\nThe Python rows were not measured: the shmring module is not installed here.\n"
    print(text)
    if args.out:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out, "w") as f:
            f.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
