#!/usr/bin/env python3
"""shmringsink/shmringsrc against GStreamer's own shared-memory transports.

Two processes per run: a producer (<source> ! <sink>) and a consumer (<src>
num-buffers=N ! fakesink) that exits after N frames. Sources (--sources):

- videotestsrc pattern=black: draws every frame (at 4K, a 12 MB copy of its
  cached frame into the buffer), which bounds every transport's frames per
  second and is most of the producer's CPU
- stampsrc (registered by gst-latency-probe, which runs those producers):
  like a camera's DMA, costs the CPU nothing per frame but a header. It
  takes each buffer from the pool or allocator the sink proposes, writes
  only a time stamp and a frame number into its first 16 bytes and pushes
  it; so frames per second and CPU per frame are the transport's

Transports:

- shmring: shmringsink (reliable ring) -> shmringsrc. videotestsrc draws
  each frame into a slot of the ring (the sink's buffer pool), and the
  source lends the slot downstream: no copy on either side. Once per ring
  size of --slots: a 4K frame is 12 MB, and the fewer slots a ring has,
  the more of it stays in the CPU's cache while videotestsrc writes it
- shmring-sink-copy: the same with `identity drop-allocation=true` before
  the sink, so that upstream does not get the sink's pool and the sink
  copies each frame into its slot once (what any buffer not from the pool
  costs: a tee, a decoder with its own pool)
- shmring-src-copy: shmringsrc copy=true (the source copies each frame out)
- shm: shmsink -> shmsrc (gst-plugins-bad; videotestsrc draws into its area)
- unixfd: unixfdsink -> unixfdsrc (GStreamer 1.24 and later; memfd frames
  whose descriptors go over a Unix socket, the source maps them), where the
  element exists; otherwise the notes say it was skipped. On Debian 12,
  bench/gst_reference.sh sets up GStreamer 1.26 to run the whole benchmark
  under
- shmring-baseline (with --baseline-plugin DIR): the zero-copy transport
  with the plugin found in DIR (another build, say that of an earlier
  commit), rings of the first --slots, interleaved with the rest: a change
  to the plugin measured against what it changed, in the same run

Throughput: each transport runs at two frame counts, N and 4N (the producer
makes a few more, the same number in both runs); the figures are the
differences (frames per second = 3N / extra wall time; CPU per frame =
extra CPU time / 3N, user + system from wait4() of each process), which
takes the start-up of the pipelines out. The first repetition finds N:
from the option's, times 4 until the 3N frames take MIN_SPAN_S (a stampsrc
producer makes hundreds of thousands of frames a second). The producer's
CPU includes the source's work on each frame: the "source alone" row
(<source> ! fakesink) is that part.

Latency, sink to source: a live producer (is-live=true, the caps' 30 frames
per second, so nothing queues) through bench's gst-latency-probe, which
writes CLOCK_MONOTONIC into the first 8 bytes of each frame before the
transport's sink and reads it back after its source in the other process;
the first frames (start-up) are left out.

In the latency runs the producer runs on one CPU and the consumer on
another (the first two this process may use).

Repetitions are interleaved (each repetition runs every transport once);
the table gives the median and, in brackets, the range. The load average
before and after each size is reported: the machine may be shared.

    GST_PLUGIN_PATH=build/gst/plugins python3 bench/gst_bench.py \\
        --probe build/gst/gst-latency-probe --out bench/results/<machine>/gst.md

--probe may be a command line ("gst-run build/gst/gst-latency-probe": the
GStreamer 1.26 runtime of bench/gst_reference.sh).
"""

from __future__ import annotations

import argparse
import os
import platform
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from typing import Any

SIZES = {"720p": (1280, 720), "4K": (3840, 2160)}
SOURCES = ("videotestsrc", "stampsrc")
NAMES = {
    "source": "source alone (<source> ! fakesink)",
    "shmring": "shmring (no copy)",
    "shmring-sink-copy": "shmring, sink copies",
    "shmring-src-copy": "shmring, source copies too",
    "shm": "shmsink/shmsrc",
    "shmring-baseline": "shmring (no copy), baseline plugin",
    "unixfd": "unixfdsink/unixfdsrc",
}


def frame_bytes(fmt: str, w: int, h: int) -> int:
    per_pixel = {"I420": 1.5, "NV12": 1.5, "RGB": 3, "BGRx": 4, "RGBA": 4, "YUY2": 2}[fmt]
    return int(w * h * per_pixel)


def element_exists(name: str) -> bool:
    return subprocess.run(["gst-inspect-1.0", name], capture_output=True).returncode == 0


# The producer makes this many frames more than the consumer takes, so that
# a transport that loses frames while the consumer connects (shmsrc may)
# still gets the consumer its N; the same for both runs, so it cancels out.
MARGIN = 32
SHM_FRAMES = 64
# Latency runs: frames measured, after the start-up frames left out.
LATENCY_FRAMES = 40
LATENCY_SKIP = 10
# Throughput runs: N grows (x4) until the 3N frames between the two runs take
# this long, so that the start-up's noise (tens of ms) stays small beside it.
MIN_SPAN_S = 0.6
MAX_FRAMES = 1 << 20


def transport_slots(transport: str, slots: int) -> tuple[str, int]:
    """"shmring@8" is shmring with rings of 8 slots; others get `slots`."""
    name, _, n = transport.partition("@")
    return name, int(n) if n else slots


def source_element(source: str, caps: str, live: bool) -> str:
    """The producer's source and its caps (num-buffers to be added)."""
    live_prop = " is-live=true" if live else ""
    if source == "stampsrc":
        return f"stampsrc caps={caps}{live_prop}"
    return f"videotestsrc pattern=black{live_prop} ! {caps}"


def with_buffers(source_line: str, n: int) -> str:
    """num-buffers=n on the source element (the first of the line)."""
    first, sep, rest = source_line.partition(" ! ")
    return f"{first} num-buffers={n}{sep}{rest}"


def pipelines(transport: str, caps: str, n: int, fsize: int, where: str, slots: int,
              live: bool = False, source: str = "videotestsrc") -> tuple[str, str]:
    """(producer, consumer) pipelines; the transport's sink is named "out",
    and the consumer's fakesink too."""
    src = with_buffers(source_element(source, caps, live), n + MARGIN)
    transport, slots = transport_slots(transport, slots)
    if transport.startswith("shmring"):
        between = " ! identity drop-allocation=true" if transport == "shmring-sink-copy" else ""
        copy = " copy=true" if transport == "shmring-src-copy" else ""
        return (f"{src}{between} ! shmringsink name=out ring={where} mode=reliable slots={slots} "
                "wait-subscribers=1",
                f"shmringsrc ring={where} timeout=30000000000 num-buffers={n}{copy} "
                "! fakesink name=out")
    if transport == "shm":
        # A smaller area stalled shmsink/shmsrc here (GStreamer 1.22: the
        # consumer waiting for a frame, the producer for room) after a few
        # hundred frames; 64 frames' worth did not.
        return (f"{src} ! shmsink name=out socket-path={where} "
                f"shm-size={fsize * SHM_FRAMES + 4096} wait-for-connection=true sync=false",
                f"shmsrc socket-path={where} is-live=true num-buffers={n} ! {caps} "
                "! fakesink name=out")
    if transport == "unixfd":
        # wait-for-connection: no frame is sent to no one (the others wait too).
        return (f"{src} ! unixfdsink name=out socket-path={where} sync=false "
                "wait-for-connection=true",
                f"unixfdsrc socket-path={where} num-buffers={n} ! fakesink name=out")
    if transport == "source":
        return (f"{with_buffers(source_element(source, caps, False), n)} ! fakesink", "")
    raise ValueError(transport)


# --baseline-plugin: where the shmring-baseline transport finds its plugin.
BASELINE_PLUGIN_PATH: str | None = None


def baseline_env() -> dict[str, str]:
    """The environment of the shmring-baseline transport's processes: its
    plugin, and a registry of its own (the same plugin name at two paths
    would make GStreamer rescan, and perhaps keep the other, at every
    switch)."""
    assert BASELINE_PLUGIN_PATH is not None
    return {**os.environ, "GST_PLUGIN_PATH": BASELINE_PLUGIN_PATH,
            "GST_REGISTRY": os.path.join(tempfile.gettempdir(),
                                         f"gst-bench-baseline-registry-{os.getuid()}.bin")}


def spawn(argv: list[str], pipeline: str, cpu: int | None,
          stdout: int = subprocess.DEVNULL, env: dict[str, str] | None = None) -> subprocess.Popen:
    """The pipeline in a process of its own, on CPU `cpu` (None: any)."""
    def pin() -> None:
        if cpu is not None:
            os.sched_setaffinity(0, {cpu})
    return subprocess.Popen([*argv, *pipeline.split()], stdout=stdout, stderr=subprocess.PIPE,
                            preexec_fn=pin, env=env)


# Latency runs: the producer on the first CPU this process may use, the
# consumer on the second. Where the scheduler puts both on one CPU, a frame
# waits there until the producer has drawn the next one (videotestsrc starts
# on it as soon as it has pushed one), which is the CPU's latency, not the
# transport's. Throughput runs are left to the scheduler: a process pinned
# to a CPU that other work takes cannot move to the idle one.
_CPUS = sorted(os.sched_getaffinity(0))
PRODUCER_CPU = _CPUS[0] if len(_CPUS) >= 2 else None
CONSUMER_CPU = _CPUS[1] if len(_CPUS) >= 2 else None


def reap(p: subprocess.Popen, deadline: float) -> tuple[int, float]:
    """Waits for `p`; (exit status, CPU seconds). Kills it at the deadline."""
    while True:
        pid, status, usage = os.wait4(p.pid, os.WNOHANG)
        if pid == p.pid:
            p.returncode = os.waitstatus_to_exitcode(status)
            return p.returncode, usage.ru_utime + usage.ru_stime
        if time.monotonic() > deadline:
            p.kill()
        time.sleep(0.002)


# --probe, split into words (it may be a command line).
PROBE: list[str] = []


def run_once(transport: str, caps: str, n: int, fsize: int, slots: int,
             latency: bool = False,
             source: str = "videotestsrc") -> tuple[float, float, float, list[int]]:
    """(wall s, producer CPU s, consumer CPU s, latencies ns) of one run of n
    frames; with `latency`, a live run through gst-latency-probe."""
    transport_name = transport
    transport = transport.partition("@")[0]
    tmp = tempfile.mkdtemp(prefix="shmring-gst-bench-")
    where = (f"gstbench-{os.getpid()}-{uuid.uuid4().hex[:8]}" if transport.startswith("shmring")
             else os.path.join(tmp, "socket"))
    prod_line, cons_line = pipelines(transport_name, caps, n, fsize, where, slots,
                                     live=latency, source=source)
    # stampsrc is registered in gst-latency-probe: its producers run there.
    if latency:
        prod_argv = [*PROBE, "stamp", "out"]
    elif source == "stampsrc":
        prod_argv = [*PROBE, "run"]
    else:
        prod_argv = ["gst-launch-1.0", "-q"]
    env = baseline_env() if transport == "shmring-baseline" else None
    cons_argv = [*PROBE, "measure", "out"] if latency else ["gst-launch-1.0", "-q"]
    try:
        start = time.monotonic()
        producer = spawn(prod_argv, prod_line, PRODUCER_CPU if latency else None, env=env)
        consumer = None
        if cons_line:
            if not transport.startswith("shmring"):
                # The socket transports: the sink makes the socket first.
                while not os.path.exists(where) and time.monotonic() - start < 10:
                    time.sleep(0.001)
            consumer = spawn(cons_argv, cons_line, CONSUMER_CPU if latency else None,
                             stdout=subprocess.PIPE, env=env)
        deadline = time.monotonic() + 30  # a run takes seconds: past this it stalled
        c_rc, c_cpu = reap(consumer, deadline) if consumer else (0, 0.0)
        end = time.monotonic()
        if consumer and transport in ("shm", "unixfd"):
            # Its peer left; it may wait for another. (Not Popen.terminate():
            # its poll() would reap the process before wait4 reads its usage.)
            os.kill(producer.pid, signal.SIGTERM)
        p_rc, p_cpu = reap(producer, deadline)
        if consumer is None:
            end = time.monotonic()
        if c_rc != 0 or (p_rc != 0 and transport not in ("shm", "unixfd")):
            out = (consumer.stderr.read().decode() if consumer else "") + producer.stderr.read().decode()
            raise RuntimeError(f"{transport}: consumer {c_rc}, producer {p_rc}:\n{out}")
        latencies: list[int] = []
        if latency and consumer:
            words = consumer.stdout.read().decode().split()
            latencies = [int(w) for w in words[2:]] if words[:1] == ["latency_ns"] else []
        return end - start, p_cpu, c_cpu, latencies
    finally:
        if transport.startswith("shmring") and os.path.exists(f"/dev/shm/{where}"):
            os.unlink(f"/dev/shm/{where}")
        shutil.rmtree(tmp, ignore_errors=True)


def retried(stalls: dict[str, int], key: str, transport: str, *args: Any,
            **kwargs: Any) -> tuple[float, float, float, list[int]]:
    """run_once, run again once if it stalled or failed (counted in
    `stalls` under `key`)."""
    try:
        return run_once(transport, *args, **kwargs)
    except RuntimeError as e:
        print(f"{e}\n(running it again)", file=sys.stderr)
        stalls[key] = stalls.get(key, 0) + 1
        return run_once(transport, *args, **kwargs)


def percentile(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))]


def loadavg() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def fmt(values: list[float], digits: int = 0) -> str:
    if not values:
        return "-"
    return (f"{statistics.median(values):.{digits}f} "
            f"({min(values):.{digits}f}-{max(values):.{digits}f})")


def per_frame(r: dict[str, list[float]]) -> float:
    """CPU per frame, producer + consumer: the sum of their medians."""
    return statistics.median(r["pcpu"]) + statistics.median(r["ccpu"])


# The targets the summary checks shmring against, at 4K: at least this many
# times the other transport's frames per second, at most this fraction of
# its CPU per frame.
TARGET_FPS = 2.0
TARGET_CPU = 0.5


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--format", default="I420")
    ap.add_argument("--frames-720p", type=int, default=300,
                    help="N at 720p (runs N and 4N), videotestsrc")
    ap.add_argument("--frames-4k", type=int, default=80,
                    help="N at 4K (runs N and 4N), videotestsrc")
    ap.add_argument("--stampsrc-frames-720p", type=int, default=2000,
                    help="N at 720p, stampsrc (frames cost it nothing: more of them)")
    ap.add_argument("--stampsrc-frames-4k", type=int, default=500, help="N at 4K, stampsrc")
    ap.add_argument("--sources", help="comma-separated: videotestsrc, stampsrc (default: both "
                    "with --probe, which runs stampsrc; else videotestsrc)")
    ap.add_argument("--reps", type=int, default=5, help="interleaved repetitions (median reported)")
    ap.add_argument("--sizes", default="720p,4K")
    ap.add_argument("--slots", default="2,8",
                    help="slots of the shmring rings, comma-separated: the zero-copy transport "
                    "runs once per value, the others with the first")
    ap.add_argument("--transports", help="comma-separated subset of: " + ", ".join(NAMES))
    ap.add_argument("--probe", help="gst-latency-probe (build/gst/gst-latency-probe), or a "
                    "command line that runs it, for the latency runs and stampsrc; without it "
                    "latency is not measured")
    ap.add_argument("--out", help="write the markdown report here too")
    ap.add_argument("--baseline-plugin", metavar="DIR",
                    help="also run the zero-copy transport with the libgstshmring.so in DIR "
                    "(another build), interleaved with the others")
    args = ap.parse_args()
    if shutil.which("gst-launch-1.0") is None:
        print("gst-launch-1.0 not found (Debian: gstreamer1.0-tools)", file=sys.stderr)
        return 2
    if not element_exists("shmringsink"):
        print("shmringsink not found: set GST_PLUGIN_PATH=build/gst/plugins", file=sys.stderr)
        return 2
    global PROBE
    PROBE = shlex.split(args.probe) if args.probe else []
    if PROBE:
        program = shutil.which(PROBE[0]) or PROBE[0]
        if not os.access(program, os.X_OK) or not os.access(PROBE[-1], os.X_OK):
            print(f"--probe {args.probe}: not an executable (build the target "
                  "gst-latency-probe)", file=sys.stderr)
            return 2
    sources = (args.sources.split(",") if args.sources
               else list(SOURCES) if PROBE else ["videotestsrc"])
    unknown = [x for x in sources if x not in SOURCES]
    if unknown:
        print(f"--sources: unknown {', '.join(unknown)}", file=sys.stderr)
        return 2
    if "stampsrc" in sources and not PROBE:
        print("--sources stampsrc: needs --probe (gst-latency-probe registers stampsrc)",
              file=sys.stderr)
        return 2
    version = subprocess.run(["gst-launch-1.0", "--version"], capture_output=True,
                             text=True).stdout.splitlines()[0]
    slot_counts = [int(x) for x in args.slots.split(",")]
    slots = slot_counts[0]
    transports = ["source", *(f"shmring@{n}" for n in slot_counts), "shmring-sink-copy",
                  "shmring-src-copy"]
    notes = []
    if args.baseline_plugin:
        if not os.path.isfile(os.path.join(args.baseline_plugin, "libgstshmring.so")):
            print(f"--baseline-plugin {args.baseline_plugin}: no libgstshmring.so there",
                  file=sys.stderr)
            return 2
        global BASELINE_PLUGIN_PATH
        BASELINE_PLUGIN_PATH = os.path.abspath(args.baseline_plugin)
        # Made here, so that no measured run scans plugins; and it must be that plugin.
        seen = subprocess.run(["gst-inspect-1.0", "shmringsink"], capture_output=True, text=True,
                              env=baseline_env()).stdout
        if f"{BASELINE_PLUGIN_PATH}/libgstshmring.so" not in seen:
            print(f"--baseline-plugin: GStreamer does not load shmringsink from "
                  f"{BASELINE_PLUGIN_PATH}", file=sys.stderr)
            return 2
        transports.insert(1 + len(slot_counts), "shmring-baseline")
        notes.append(f"baseline plugin: {BASELINE_PLUGIN_PATH}/libgstshmring.so, rings of "
                     f"{slots} slots")
    others = []  # the other transports the summary compares shmring with
    for t, element in (("shm", "shmsink"), ("unixfd", "unixfdsink")):
        if element_exists(element):
            transports.append(t)
            others.append(t)
        else:
            notes.append(f"{element} skipped: `gst-inspect-1.0 {element}` finds no such element "
                         f"in this GStreamer ({version}); bench/gst_reference.sh sets up one "
                         "that has it")
    if args.transports:
        wanted = args.transports.split(",")
        unknown = [t for t in wanted if t not in NAMES]
        if unknown:
            print(f"--transports: unknown {', '.join(unknown)}", file=sys.stderr)
            return 2
        transports = [t for t in transports if t.partition("@")[0] in wanted]
    # The copy rows show what a copy of each frame costs; with stampsrc they
    # would only add that copy to a source that has none.
    runs = [(src, t) for src in sources for t in transports
            if src == "videotestsrc" or not t.startswith(("shmring-sink-copy", "shmring-src-copy"))]

    cpu = "unknown"
    if shutil.which("lscpu"):
        for line in subprocess.run(["lscpu"], capture_output=True, text=True).stdout.splitlines():
            if line.startswith("Model name:"):
                cpu = line.split(":", 1)[1].strip()
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True).stdout.strip() or "unknown"
    lines = [
        f"Machine: {cpu}, {os.cpu_count()} CPUs, {platform.platform()}; {version}; "
        f"commit {commit}; {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())}.",
        "",
        "```sh",
        f"GST_PLUGIN_PATH=build/gst/plugins python3 bench/gst_bench.py "
        f"{shlex.join(sys.argv[1:])}",
        "```",
        "",
        f"Raw video {args.format}; sources: videotestsrc pattern=black (draws each frame), "
        "stampsrc (writes a 16-byte header into a buffer of the sink's pool or allocator, "
        "like a camera's DMA: the transport's cost alone). Reliable delivery everywhere "
        f"(the sink waits for the source), shmring rings of {slots} slots unless the row "
        "says otherwise, consumer fakesink. "
        f"Median of {args.reps} interleaved repetitions (range in brackets). "
        "Throughput and CPU from the difference of runs of N and 4N frames (N: the first "
        f"repetition's, from the option, times 4 until 3N frames took {MIN_SPAN_S:g} s); "
        "CPU per frame is "
        "user + system time of each process. Latency: a live producer at 30 frames/s "
        f"(producer on CPU {PRODUCER_CPU}, consumer on CPU {CONSUMER_CPU}), from "
        "before the transport's sink to after its source (CLOCK_MONOTONIC stamped in the "
        f"frame), frames {LATENCY_SKIP + 1} to {LATENCY_FRAMES} of each repetition: the median "
        "of each repetition's p50, and the largest p90.",
        "",
        "| size | source | transport | N | frames/s | producer CPU us/frame | "
        "consumer CPU us/frame | latency p50 us | latency p90 us (worst) | load before / after |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    summary = []
    for size in args.sizes.split(","):
        w, h = SIZES[size]
        caps = f"video/x-raw,format={args.format},width={w},height={h},framerate=30/1"
        first_n = {"videotestsrc": args.frames_720p if size == "720p" else args.frames_4k,
                   "stampsrc": (args.stampsrc_frames_720p if size == "720p"
                                else args.stampsrc_frames_4k)}
        frames: dict[tuple[str, str], int] = {}  # N of each run, set by its first repetition
        fsize = frame_bytes(args.format, w, h)
        load_before = loadavg()
        res: dict[tuple[str, str], dict[str, list[float]]] = {
            r: {"fps": [], "pcpu": [], "ccpu": [], "p50": [], "p90": []} for r in runs}
        failed: dict[tuple[str, str], str] = {}
        stalls: dict[str, int] = {}
        for rep in range(args.reps):
            for run in runs:
                source, t = run
                if run in failed:
                    continue
                key = f"{source}, {t}"
                try:
                    n = frames.get(run, first_n[source])
                    while True:
                        w1, p1, c1, _ = retried(stalls, key, t, caps, n, fsize, slots,
                                                source=source)
                        w4, p4, c4, _ = retried(stalls, key, t, caps, 4 * n, fsize, slots,
                                                source=source)
                        # The first repetition finds an N whose 3N frames take long
                        # enough for the start-up's noise not to matter; all use it.
                        if run in frames or w4 - w1 >= MIN_SPAN_S or n >= MAX_FRAMES:
                            break
                        n *= 4
                    frames[run] = n
                    lat: list[int] = []
                    if PROBE and t != "source":
                        lat = retried(stalls, key, t, caps, LATENCY_FRAMES, fsize, slots,
                                      latency=True, source=source)[3][LATENCY_SKIP:]
                except RuntimeError as e:
                    print(e, file=sys.stderr)
                    failed[run] = "stalled or failed twice in a row (see stderr)"
                    continue
                extra = 3 * n
                r = res[run]
                if w4 > w1:  # else start-up noise larger than the work: no figure from this pair
                    r["fps"].append(extra / (w4 - w1))
                    r["pcpu"].append((p4 - p1) / extra * 1e6)
                    r["ccpu"].append((c4 - c1) / extra * 1e6)
                if lat:
                    r["p50"].append(statistics.median(lat) / 1e3)
                    r["p90"].append(percentile(lat, 0.9) / 1e3)
            print(f"{size}: repetition {rep + 1}/{args.reps} done, load {loadavg()}",
                  file=sys.stderr, flush=True)
        load_after = loadavg()
        for run in runs:
            source, t = run
            r = res[run]
            if run in failed or not r["fps"]:
                lines.append(f"| {size} | {source} | {t} | - | {failed.get(run, 'no figure')} | - | "
                             f"- | - | - | {load_before} / {load_after} |")
                continue
            consumer = "-" if t == "source" else fmt(r["ccpu"])
            base, _, n_slots = t.partition("@")
            name = NAMES[base] if not n_slots else f"shmring (no copy, {n_slots} slots)"
            if base == "shmring-baseline":
                name = f"shmring (no copy, {slots} slots), baseline plugin"
            if base == "source":
                name = f"source alone ({source} ! fakesink)"
            worst = f"{max(r['p90']):.0f}" if r["p90"] else "-"
            lines.append(f"| {size} | {source} | {name} | {frames[run]} | {fmt(r['fps'])} | "
                         f"{fmt(r['pcpu'])} | "
                         f"{consumer} | {fmt(r['p50'])} | {worst} | {load_before} / "
                         f"{load_after} |")
            print(lines[-1], flush=True)
        for key, count in stalls.items():
            notes.append(f"{size}, {key}: {count} run(s) stalled or failed and were run again")
        for source in sources:
            for t in transports:
                ring = res.get((source, t))
                if (not t.startswith(("shmring@", "shmring-baseline")) or not ring
                        or not ring["fps"]):
                    continue
                label = (f"{t.partition('@')[2]} slots" if "@" in t
                         else f"{slots} slots, baseline plugin")
                for other in others:
                    theirs = res.get((source, other))
                    if not theirs or not theirs["fps"]:
                        continue
                    fps_x = statistics.median(ring["fps"]) / statistics.median(theirs["fps"])
                    cpu_x = per_frame(ring) / per_frame(theirs)
                    line = (f"- {size}, {source}, shmring ({label}) against "
                            f"{NAMES[other]}: frames per second {fps_x:.2f}x; CPU per frame "
                            f"(producer + consumer) {per_frame(ring):.0f} us against "
                            f"{per_frame(theirs):.0f} us ({cpu_x:.2f}x)")
                    alone = res.get((source, "source"))
                    if alone and alone["pcpu"]:
                        # The transport's own part: less what the source costs alone.
                        a = statistics.median(alone["pcpu"])
                        line += (f"; less the source alone ({a:.0f} us): "
                                 f"{per_frame(ring) - a:.0f} us against "
                                 f"{per_frame(theirs) - a:.0f} us")
                    if size == "4K":
                        line += (f"; targets {TARGET_FPS:g}x frames/s "
                                 f"{'met' if fps_x >= TARGET_FPS else 'missed'}, "
                                 f"{TARGET_CPU:g}x CPU "
                                 f"{'met' if cpu_x <= TARGET_CPU else 'missed'}")
                    summary.append(line)
    lines.append("")
    lines.extend(summary)
    lines.extend(f"- {note}" for note in notes)
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
        with open(args.out, "w") as f:
            f.write("# GStreamer transports\n\n" + text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
