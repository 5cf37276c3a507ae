#!/usr/bin/env python3
"""shmringsink/shmringsrc against GStreamer's own shared-memory transports.

Two gst-launch-1.0 processes per run: a producer (videotestsrc ! raw video
caps ! <sink>) and a consumer (<src> num-buffers=N ! fakesink) that exits
after N frames. Transports:

- shmring: shmringsink (reliable ring) -> shmringsrc, frames lent in place
- shmring-copy: the same with shmringsrc copy=true (one copy on each side)
- shm: shmsink -> shmsrc (gst-plugins-bad; one copy into its area)
- unixfd: unixfdsink -> unixfdsrc (GStreamer 1.24 and later), where the
  element exists; otherwise the table says it was skipped

Each transport runs at two frame counts, N and 4N (the producer makes a
few more, the same number in both runs); the figures are the
differences (frames per second = 3N / extra wall time; CPU per frame =
extra CPU time / 3N, user + system from wait4() of each process), which
takes the start-up of the pipelines out. The producer's CPU includes
videotestsrc drawing each frame: the "source alone" row (videotestsrc !
fakesink) is that part. Latency from sink to source is not measured.

    GST_PLUGIN_PATH=build/gst/plugins python3 bench/gst_bench.py \\
        --out bench/results/<machine>/gst.md
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid

SIZES = {"720p": (1280, 720), "4K": (3840, 2160)}


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


def pipelines(transport: str, caps: str, n: int, fsize: int, where: str) -> tuple[str, str]:
    src = f"videotestsrc pattern=black num-buffers={n + MARGIN} ! {caps}"
    if transport in ("shmring", "shmring-copy"):
        copy = " copy=true" if transport == "shmring-copy" else ""
        return (f"{src} ! shmringsink ring={where} mode=reliable slots=8 wait-subscribers=1",
                f"shmringsrc ring={where} timeout=30000000000 num-buffers={n}{copy} ! fakesink")
    if transport == "shm":
        # A smaller area stalled shmsink/shmsrc here (GStreamer 1.22: the
        # consumer waiting for a frame, the producer for room) after a few
        # hundred frames; 64 frames' worth did not.
        return (f"{src} ! shmsink socket-path={where} shm-size={fsize * SHM_FRAMES + 4096} "
                "wait-for-connection=true sync=false",
                f"shmsrc socket-path={where} is-live=true num-buffers={n} ! {caps} ! fakesink")
    if transport == "unixfd":
        return (f"{src} ! unixfdsink socket-path={where} sync=false",
                f"unixfdsrc socket-path={where} num-buffers={n} ! fakesink")
    if transport == "source":
        return (f"videotestsrc pattern=black num-buffers={n} ! {caps} ! fakesink", "")
    raise ValueError(transport)


def spawn(pipeline: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(["gst-launch-1.0", "-q", *pipeline.split()],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def reap(p: subprocess.Popen[bytes], deadline: float) -> tuple[int, float]:
    """Waits for `p`; (exit status, CPU seconds). Kills it at the deadline."""
    while True:
        pid, status, usage = os.wait4(p.pid, os.WNOHANG)
        if pid == p.pid:
            p.returncode = os.waitstatus_to_exitcode(status)
            return p.returncode, usage.ru_utime + usage.ru_stime
        if time.monotonic() > deadline:
            p.kill()
        time.sleep(0.002)


def run_once(transport: str, caps: str, n: int, fsize: int) -> tuple[float, float, float]:
    """(wall seconds, producer CPU s, consumer CPU s) of one run of n frames."""
    tmp = tempfile.mkdtemp(prefix="shmring-gst-bench-")
    where = (f"gstbench-{os.getpid()}-{uuid.uuid4().hex[:8]}" if transport.startswith("shmring")
             else os.path.join(tmp, "socket"))
    prod_line, cons_line = pipelines(transport, caps, n, fsize, where)
    try:
        start = time.monotonic()
        producer = spawn(prod_line)
        consumer = None
        if cons_line:
            if not transport.startswith("shmring"):
                # The socket transports: the sink makes the socket first.
                while not os.path.exists(where) and time.monotonic() - start < 10:
                    time.sleep(0.001)
            consumer = spawn(cons_line)
        deadline = time.monotonic() + 60
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
            out = (consumer.stdout.read().decode() if consumer else "") + producer.stdout.read().decode()
            raise RuntimeError(f"{transport}: consumer {c_rc}, producer {p_rc}:\n{out}")
        return end - start, p_cpu, c_cpu
    finally:
        if transport.startswith("shmring") and os.path.exists(f"/dev/shm/{where}"):
            os.unlink(f"/dev/shm/{where}")
        shutil.rmtree(tmp, ignore_errors=True)


def measure(transport: str, caps: str, n: int, fsize: int, reps: int) -> dict[str, float] | None:
    """Medians over `reps`; None if a run stalled (its consumer got fewer frames)."""
    fps, pcpu, ccpu = [], [], []
    for _ in range(reps):
        try:
            w1, p1, c1 = run_once(transport, caps, n, fsize)
            w4, p4, c4 = run_once(transport, caps, 4 * n, fsize)
        except RuntimeError as e:
            print(e, file=sys.stderr)
            return None
        extra = 3 * n
        if w4 <= w1:
            continue  # start-up noise larger than the work: no figure from this pair
        fps.append(extra / (w4 - w1))
        pcpu.append((p4 - p1) / extra * 1e6)
        ccpu.append((c4 - c1) / extra * 1e6)
    if not fps:
        return None
    return {"fps": statistics.median(fps), "fps_min": min(fps), "fps_max": max(fps),
            "producer_us": statistics.median(pcpu), "consumer_us": statistics.median(ccpu)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--format", default="I420")
    ap.add_argument("--frames-720p", type=int, default=100, help="N at 720p (runs N and 4N)")
    ap.add_argument("--frames-4k", type=int, default=20, help="N at 4K (runs N and 4N)")
    ap.add_argument("--reps", type=int, default=3, help="repetitions (median reported)")
    ap.add_argument("--sizes", default="720p,4K")
    ap.add_argument("--out", help="write the markdown table here too")
    args = ap.parse_args()
    if shutil.which("gst-launch-1.0") is None:
        print("gst-launch-1.0 not found (Debian: gstreamer1.0-tools)", file=sys.stderr)
        return 2
    if not element_exists("shmringsink"):
        print("shmringsink not found: set GST_PLUGIN_PATH=build/gst/plugins", file=sys.stderr)
        return 2
    transports = ["source", "shmring", "shmring-copy"]
    notes = []
    for t, element in (("shm", "shmsink"), ("unixfd", "unixfdsink")):
        if element_exists(element):
            transports.append(t)
        else:
            notes.append(f"{element} skipped: no such element in this GStreamer "
                         f"({subprocess.run(['gst-launch-1.0', '--version'], capture_output=True, text=True).stdout.splitlines()[0]})")
    lines = []
    cpu = "unknown"
    if shutil.which("lscpu"):
        for line in subprocess.run(["lscpu"], capture_output=True, text=True).stdout.splitlines():
            if line.startswith("Model name:"):
                cpu = line.split(":", 1)[1].strip()
    lines.append(f"Machine: {cpu}, {os.cpu_count()} CPUs, {platform.platform()}")
    lines.append("")
    lines.append(f"Command: `GST_PLUGIN_PATH=build/gst/plugins python3 bench/gst_bench.py "
                 f"{' '.join(sys.argv[1:])}`")
    lines.append("")
    lines.append(f"Raw video {args.format}, videotestsrc pattern=black, reliable delivery "
                 "everywhere (the sink waits for the source), consumer fakesink. Median of "
                 f"{args.reps} (fps: min-max); figures from the difference of runs of N and "
                 "4N frames. CPU per frame: user + system of each process.")
    lines.append("")
    lines.append("| size | transport | frames/s (min-max) | producer CPU us/frame | "
                 "consumer CPU us/frame |")
    lines.append("| --- | --- | --- | --- | --- |")
    for size in args.sizes.split(","):
        w, h = SIZES[size]
        caps = f"video/x-raw,format={args.format},width={w},height={h},framerate=30/1"
        n = args.frames_720p if size == "720p" else args.frames_4k
        fsize = frame_bytes(args.format, w, h)
        for t in transports:
            r = measure(t, caps, n, fsize, args.reps)
            name = "source alone (videotestsrc ! fakesink)" if t == "source" else t
            if r is None:
                lines.append(f"| {size} | {name} | stalled (no N frames within 60 s) | - | - |")
                print(lines[-1], flush=True)
                continue
            consumer = "-" if t == "source" else f"{r['consumer_us']:.0f}"
            lines.append(f"| {size} | {name} | {r['fps']:.0f} ({r['fps_min']:.0f}-{r['fps_max']:.0f}) "
                         f"| {r['producer_us']:.0f} | {consumer} |")
            print(lines[-1], flush=True)
    lines.append("")
    lines.extend(f"- {n}" for n in notes)
    lines.append("- Latency from sink to source: not measured.")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
        with open(args.out, "w") as f:
            f.write("# GStreamer transports\n\n" + text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
