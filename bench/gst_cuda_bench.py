#!/usr/bin/env python3
"""4K frames of a shmringsink ring read on the GPU, in place, with CuPy.

A producer writes raw I420 video into a reliable broadcast ring, one frame
per slot, in shmringsink's layout (docs/gstreamer.md); this script subscribes
with the ring's mapping registered with CUDA and has the GPU read every byte
of every frame where it lies, in host memory (slot.cuda(): a device array on
the slot, no copy), before it hands the slot back. It reports frames per
second and GB/s end to end, and the GPU's time to read one frame, against
ceilings measured in the same process on registered memory of a frame's
size with no ring traffic: the same CuPy read (what this read could reach),
a whole-grid kernel of 16-byte loads (what bench/gpu_run.sh calls "kernel
16-byte loads from registered memory, whole grid", 51.2 GB/s on the H100
host, bench/results/h100/gpu.md) and cudaMemcpy to the device
(--ceiling GBS compares with a given figure instead).

The producer (--source):

- gst: gst-launch-1.0 videotestsrc ! video/x-raw,format=I420,width=3840,
  height=2160 ! shmringsink mode=reliable (the plugin must be on
  GST_PLUGIN_PATH);
- python: this script as a producer process (shmring.gst.create and
  claims written in place), frames of the same format and layout, for a
  host without GStreamer (--gst-bundle DIR: a GStreamer that
  bench/bundle.sh --gst put into DIR, for a host without one). --write full copies every frame into its slot (as
  a camera would); --write stamp writes each slot whole once, then only its
  header and first word, so that the GPU side is what limits the rate;
- auto (the default): gst where shmringsink is found, else python;
- none: a ring that something else feeds (--ring NAME), e.g.

      gst-launch-1.0 videotestsrc ! video/x-raw,format=I420,width=3840,height=2160 \\
          ! shmringsink ring=cam4k mode=reliable wait-subscribers=1

With --verify the producer stores each frame's checksum in its header and
the GPU recomputes it from the bytes it read (a wrong frame fails the run);
without it the GPU sums the frame's words (it still reads every byte).

On the GPU host, with the wheel installed (pip install shmring-*.whl numpy
cupy-cuda12x):

    python3 bench/gst_cuda_bench.py --frames 1000                   # auto source
    python3 bench/gst_cuda_bench.py --source python --write stamp --frames 2000
    GST_PLUGIN_PATH=build/gst/plugins python3 bench/gst_cuda_bench.py --source gst --verify

On a GPU host without GStreamer or the wheel, bench/gst_cuda_run.sh runs
it with what bench/bundle.sh --gst put into one folder.

--device cpu reads the frames with numpy instead (no GPU: a check of the
script itself). --json PATH writes the figures there too. Exit status 0, 1 if a frame failed verification, 2 for bad
arguments or a missing piece (CuPy, a GPU, GStreamer).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
import uuid
from typing import Any

import numpy as np

import shmring
import shmring.gst as sg

def i420_bytes(width: int, height: int) -> int:
    # GStreamer's default I420 layout: Y rows padded to 4 bytes, chroma rows
    # of ceil(width / 2) padded to 4, chroma height ceil(height / 2).
    y_stride = (width + 3) // 4 * 4
    c_stride = ((width + 1) // 2 + 3) // 4 * 4
    return y_stride * height + 2 * c_stride * ((height + 1) // 2)


def caps_of(width: int, height: int) -> str:
    return f"video/x-raw,format=I420,width={width},height={height},framerate=30/1"


def base_frames(size: int, count: int) -> list[np.ndarray]:
    """`count` distinct frames of `size` bytes (black, a different luma
    level each, first word 0: the producer writes the frame number there)."""
    frames = []
    for k in range(count):
        f = np.full(size, 128, dtype=np.uint8)
        f[: size * 2 // 3] = 16 + 32 * k  # the luma plane, about
        f[:8] = 0
        frames.append(f)
    return frames


def produce(name: str, frames: int, width: int, height: int, write: str, verify: bool) -> int:
    """The Python producer: `frames` frames into the existing ring `name`,
    then the end of the stream."""
    size = i420_bytes(width, height)
    bases = base_frames(size, 4)
    # Frame n is base n % 4 with word 0 = n: its checksum is the base's plus
    # n (word 0 counts once), modulo 2**64.
    sums = [sg.checksum(b) for b in bases]
    duration = 1_000_000_000 // 30
    seg = shmring.open(name, kind="broadcast")
    written = set()
    with seg.producer() as producer:
        for n in range(frames):
            with producer.claim(timeout=60) as slot:
                a = slot.array
                base = n % len(bases)
                if write == "full" or (slot.position % seg.capacity, base) not in written:
                    a[sg.HEADER_SIZE:sg.HEADER_SIZE + size] = bases[base]
                    written.add((slot.position % seg.capacity, base))
                a[sg.HEADER_SIZE:sg.HEADER_SIZE + 8] = np.frombuffer(
                    np.uint64(n).tobytes(), dtype=np.uint8)
                checksum = (sums[base] + n) % (1 << 64) if verify else None
                a[:sg.HEADER_SIZE] = np.frombuffer(
                    sg.header(n, size, pts=n * duration, duration=duration, checksum=checksum),
                    dtype=np.uint8)
                del a  # a view of the slot: gone before the slot is published
                slot.commit(sg.HEADER_SIZE + size)
        producer.end_stream()
    seg.close()
    return 0


class GpuReader:
    """Reads a frame's bytes where they lie, on the GPU (CuPy) or, for
    --device cpu, with numpy; checks the checksum where one was stored."""

    def __init__(self, device: str, size: int) -> None:
        self.device = device
        self.size = size
        if device == "cuda":
            import cupy  # noqa: PLC0415 (only on the GPU host)
            self.xp = cupy
            self.start = cupy.cuda.Event()
            self.end = cupy.cuda.Event()
        else:
            self.xp = np
        # The checksum's weights 1, 3, 5, ... per 64-bit word, made once.
        self.odd = self.xp.arange(1, 2 * (size // 8), 2, dtype=self.xp.uint64)

    def read(self, frame: sg.Frame) -> tuple[float, bool]:
        """(seconds the read took, whether the checksum matched or none was
        stored)."""
        xp = self.xp
        if self.device == "cuda":
            # The whole message (header + frame), a device array on the slot.
            whole = xp.asarray(frame.slot.cuda())
            words = whole[sg.HEADER_SIZE:sg.HEADER_SIZE + self.size].view(xp.uint64)
            self.start.record()
        else:
            words = frame.payload[:self.size].view(np.uint64)
            t0 = time.perf_counter()
        with np.errstate(over="ignore"):
            if frame.checksum is not None:
                got = (words * self.odd).sum(dtype=xp.uint64)
            else:
                got = words.sum(dtype=xp.uint64)
        if self.device == "cuda":
            self.end.record()
            # The slot goes back to the ring after this frame: the GPU must
            # be done reading it.
            self.end.synchronize()
            seconds = xp.cuda.get_elapsed_time(self.start, self.end) / 1e3
            del whole, words
        else:
            seconds = time.perf_counter() - t0
            del words
        ok = frame.checksum is None or int(got) == frame.checksum
        return seconds, ok


# A whole-grid kernel of 16-byte loads: every thread strides over the buffer
# and folds what it read into one word, stored only if it is an unlikely
# value (the loads cannot be left out, the stores cost nothing).
_LOAD16 = r"""
extern "C" __global__ void load16(const ulonglong2* p, unsigned long long n,
                                  unsigned long long* out) {
  unsigned long long acc = 0;
  for (unsigned long long i = blockIdx.x * (unsigned long long)blockDim.x + threadIdx.x; i < n;
       i += (unsigned long long)gridDim.x * blockDim.x) {
    const ulonglong2 v = p[i];
    acc ^= v.x + v.y;
  }
  if (acc == 0x5eed5eed5eed5eedull) out[0] = acc;
}
"""


def ceilings(device: str, size: int, reps: int, verify: bool) -> dict[str, float]:
    """GB/s of reading `size` bytes of registered host memory (a shmring
    segment of one slot, registered as the ring is) with no ring traffic:
    the reader's own read, a whole-grid 16-byte-load kernel, and cudaMemcpy
    to the device; for --device cpu, the numpy read only. Best of `reps`.
    `verify`: the reader's read is the checksum, as for frames that carry one."""
    name = f"gst-cuda-ceiling-{os.getpid()}-{uuid.uuid4().hex[:6]}"
    seg = shmring.create(name, kind="spsc", capacity=1, slot_size=sg.HEADER_SIZE + size,
                         unlink_on_close=True)
    out: dict[str, float] = {}
    try:
        if device == "cuda":
            seg.register_cuda()
        reader = GpuReader(device, size)
        with seg.producer() as producer:
            slot = producer.claim(timeout=1)
            host = slot.array
            host[:] = 7  # touched, as a frame is
            del host
            frame = sg.Frame(data=np.empty(0, np.uint8), pts=None, dts=None, duration=None,
                             frame=0, offset=0, flags=0, checksum=0 if verify else None, slot=slot,
                             payload=np.frombuffer(slot, dtype=np.uint8)[sg.HEADER_SIZE:])
            out["reader"] = size / min(reader.read(frame)[0] for _ in range(reps)) / 1e9
            frame.payload = frame.data = np.empty(0, np.uint8)
            if device == "cuda":
                import cupy  # noqa: PLC0415

                whole = cupy.asarray(slot.cuda())
                src = whole[sg.HEADER_SIZE:sg.HEADER_SIZE + size]
                kernel = cupy.RawKernel(_LOAD16, "load16")
                sms = cupy.cuda.Device().attributes["MultiProcessorCount"]
                sink = cupy.zeros(1, dtype=cupy.uint64)
                dst = cupy.empty(size, dtype=cupy.uint8)
                start, end = cupy.cuda.Event(), cupy.cuda.Event()

                def timed(run: Any) -> float:
                    best = float("inf")
                    for _ in range(reps + 1):  # the first one loads the kernel
                        start.record()
                        run()
                        end.record()
                        end.synchronize()
                        best = min(best, cupy.cuda.get_elapsed_time(start, end) / 1e3)
                    return size / best / 1e9

                runs = {
                    "load16": lambda: kernel((sms * 8,), (512,),
                                             (src, np.uint64(size // 16), sink)),
                    # cudaMemcpyDefault: the registered memory's device address
                    # is its host address (unified addressing).
                    "memcpy": lambda: cupy.cuda.runtime.memcpyAsync(
                        dst.data.ptr, src.data.ptr, size, cupy.cuda.runtime.memcpyDefault,
                        cupy.cuda.get_current_stream().ptr),
                }
                for key, run in runs.items():
                    # A ceiling that cannot be measured (no NVRTC for the
                    # kernel, say) is left out, not the frames' figures.
                    try:
                        out[key] = timed(run)
                    except Exception as e:  # noqa: BLE001
                        print(f"ceiling {key} not measured: {type(e).__name__}: {e}",
                              file=sys.stderr)
                del whole, src, runs
            gc.collect()  # the device arrays on the slot, before it goes back
            slot.abort()
    finally:
        seg.close()
    return out


def gst_prefix(args: argparse.Namespace) -> list[str]:
    """What runs a GStreamer tool: the bundle's gst-env (its GStreamer, its
    plugins, only for that process: this one keeps its own libraries), or
    nothing (the GStreamer on PATH)."""
    return [os.path.join(args.gst_bundle, "gst-env")] if args.gst_bundle else []


def start_producer(args: argparse.Namespace, ring: str) -> subprocess.Popen[bytes]:
    if args.source == "gst":
        line = (f"videotestsrc pattern={args.pattern} num-buffers={args.frames} ! "
                f"{caps_of(args.width, args.height)} ! shmringsink ring={ring} mode=reliable "
                f"slots={args.slots} wait-subscribers=1 checksum={'true' if args.verify else 'false'}")
        return subprocess.Popen([*gst_prefix(args), "gst-launch-1.0", "-q", *line.split()])
    cmd = [sys.executable, os.path.abspath(__file__), "--produce", ring, "--frames",
           str(args.frames), "--width", str(args.width), "--height", str(args.height),
           "--write", args.write]
    if args.verify:
        cmd.append("--verify")
    return subprocess.Popen(cmd)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--source", choices=["auto", "gst", "python", "none"], default="auto")
    ap.add_argument("--ring", help="the ring's name (--source none: required)")
    ap.add_argument("--frames", type=int, default=1000, help="frames to produce / read")
    ap.add_argument("--width", type=int, default=3840)
    ap.add_argument("--height", type=int, default=2160)
    ap.add_argument("--slots", type=int, default=4, help="slots of the ring (a power of two)")
    ap.add_argument("--pattern", default="black",
                    help="gst: videotestsrc's pattern (black is drawn once and copied; smpte "
                    "is drawn anew each frame, about 30 frames/s at 4K on one core)")
    ap.add_argument("--write", choices=["full", "stamp"], default="full",
                    help="python producer: copy every frame, or only stamp slots written once")
    ap.add_argument("--verify", action="store_true",
                    help="checksum every frame (producer) and check it on the GPU")
    ap.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    ap.add_argument("--ceiling", type=float,
                    help="compare with this GB/s instead of ceilings measured here")
    ap.add_argument("--ceiling-reps", type=int, default=20,
                    help="reads of each ceiling measurement (the best counts)")
    ap.add_argument("--gst-bundle", metavar="DIR",
                    help="run GStreamer from this bench/bundle.sh --gst bundle")
    ap.add_argument("--json", metavar="PATH", help="write the figures here too")
    ap.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for a frame")
    ap.add_argument("--produce", metavar="RING", help=argparse.SUPPRESS)  # the producer process
    args = ap.parse_args()
    if args.produce:
        return produce(args.produce, args.frames, args.width, args.height, args.write, args.verify)

    if args.device == "cuda":
        try:
            import cupy  # noqa: F401, PLC0415
        except ImportError:
            print("CuPy is not installed (pip install cupy-cuda12x or cupy-cuda13x, as the "
                  "driver's CUDA), or use --device cpu",
                  file=sys.stderr)
            return 2
        if not shmring.built_with_cuda() or shmring.gpu_count() == 0:
            print("this shmring module was built without CUDA or sees no GPU "
                  f"(built_with_cuda={shmring.built_with_cuda()}, gpu_count="
                  f"{shmring.gpu_count()})", file=sys.stderr)
            return 2
    if args.gst_bundle and not os.access(os.path.join(args.gst_bundle, "gst-env"), os.X_OK):
        print(f"--gst-bundle {args.gst_bundle}: no gst-env there (make the bundle with "
              "bench/bundle.sh --gst)", file=sys.stderr)
        return 2
    has_gst = (args.gst_bundle or shutil.which("gst-inspect-1.0") is not None) and subprocess.run(
        [*gst_prefix(args), "gst-inspect-1.0", "shmringsink"], capture_output=True).returncode == 0
    if args.source == "auto":
        args.source = "gst" if has_gst else "python"
    if args.source == "gst" and not has_gst:
        print("--source gst: gst-inspect-1.0 finds no shmringsink (set GST_PLUGIN_PATH to the "
              "plugin's directory, or --gst-bundle), or use --source python", file=sys.stderr)
        return 2
    if args.source == "none" and not args.ring:
        print("--source none reads a ring that something else feeds: name it with --ring",
              file=sys.stderr)
        return 2
    ring = args.ring or f"gst-cuda-bench-{os.getpid()}-{uuid.uuid4().hex[:6]}"
    size = i420_bytes(args.width, args.height)
    # First, so that CUDA's start-up and the kernels' compilation are done
    # before the first frame.
    ceiling = ({"given": args.ceiling} if args.ceiling is not None
               else ceilings(args.device, size, args.ceiling_reps, args.verify))

    made = None
    if args.source == "python":
        # The ring first, so that this process subscribes before the first
        # frame; the producer process opens it.
        made = sg.create(ring, caps_of(args.width, args.height), size, slots=args.slots,
                         subscribers=1, delivery="reliable", unlink_on_close=True)
    producer: subprocess.Popen[bytes] | None = None

    def subscribed() -> None:
        nonlocal producer
        if args.source in ("gst", "python"):
            producer = start_producer(args, ring)

    reader = GpuReader(args.device, size)
    times: list[float] = []
    bad = n = 0
    first = last = 0.0
    try:
        if args.source == "gst":
            # shmringsink makes the ring when its caps are known and waits
            # for a subscriber (wait-subscribers=1): start it first.
            subscribed()
            on_subscribe = None
        else:
            on_subscribe = subscribed
        for frame in sg.frames(ring, timeout=args.timeout, register_cuda=args.device == "cuda",
                               subscribed=on_subscribe):
            if frame.slot is None:
                print(f"ring '{ring}' is lossy: its frames are copies, not slots to read in "
                      "place; make it with shmringsink mode=reliable", file=sys.stderr)
                return 2
            if frame.payload.size < size:
                print(f"frames of {frame.payload.size} bytes, {size} expected for "
                      f"{args.width}x{args.height} I420", file=sys.stderr)
                return 2
            seconds, ok = reader.read(frame)
            if n == 0:
                first = time.perf_counter()
            else:
                times.append(seconds)  # the first read includes CUDA's start-up
            last = time.perf_counter()
            n += 1
            if not ok:
                bad += 1
                print(f"frame {frame.frame}: checksum mismatch", file=sys.stderr)
            if n >= args.frames:
                break
    finally:
        if producer is not None:
            try:
                producer.wait(timeout=30)
            except subprocess.TimeoutExpired:
                producer.kill()
        if made is not None:
            made.close()
    if n < 2:
        print(f"{n} frame(s) read: too few to measure", file=sys.stderr)
        return 2
    wall = last - first
    frames_s = (n - 1) / wall
    gbs = frames_s * size / 1e9
    p50 = statistics.median(times)
    p99 = sorted(times)[min(len(times) - 1, int(0.99 * len(times)))]
    read_gbs = size / p50 / 1e9
    where = "GPU (CuPy, slot.cuda(), registered host memory)" if args.device == "cuda" else "CPU (numpy)"
    print(f"source: {args.source}{' (' + args.write + ')' if args.source == 'python' else ''}, "
          f"ring '{ring}', {args.width}x{args.height} I420, {size:,} B per frame, "
          f"{args.slots} slots; read on the {where}"
          f"{', checksum of every frame' if args.verify else ', sum of every word'}")
    print(f"frames: {n} in {wall:.3f} s: {frames_s:.1f} frames/s, {gbs:.2f} GB/s end to end")
    print(f"read of one frame: p50 {p50 * 1e6:.0f} us, p99 {p99 * 1e6:.0f} us: {read_gbs:.1f} GB/s "
          "at p50")
    names = {"reader": "the same read of registered memory, no ring",
             "load16": "kernel 16-byte loads, whole grid", "memcpy": "cudaMemcpy to the device",
             "given": "--ceiling"}
    for key, value in ceiling.items():
        print(f"ceiling ({names[key]}): {value:.1f} GB/s; the read at p50 is "
              f"{read_gbs / value:.0%} of it, end to end {gbs / value:.0%}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"source": args.source, "write": args.write if args.source == "python" else None,
                       "device": args.device, "verify": args.verify, "width": args.width,
                       "height": args.height, "frame_bytes": size, "slots": args.slots,
                       "frames": n, "bad_frames": bad, "seconds": wall, "frames_per_s": frames_s,
                       "end_to_end_gbs": gbs, "read_p50_us": p50 * 1e6, "read_p99_us": p99 * 1e6,
                       "read_p50_gbs": read_gbs, "ceilings_gbs": ceiling}, f, indent=1)
    if bad:
        print(f"result: {bad} of {n} frames FAILED verification")
        return 1
    print(f"result: OK{', every frame verified' if args.verify else ''}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
