#!/usr/bin/env python3
"""The C++ -> Python (-> GPU) frame pipeline.

Creates a ring of camera-like frames (uint8, height x width x channels),
starts the C++ producer (shmring-frames) that writes each frame in place,
and consumes every frame zero-copy: ``slot.array`` is a numpy array on the
slot itself, and with a GPU (PyTorch or CuPy, the segment registered with
CUDA) ``torch.from_dlpack(slot.cuda())`` is a CUDA tensor on the same bytes.
Every frame is verified (its sequence number and every byte), on the GPU when
one is used, and the rates are printed.

    python3 examples/python_consumer.py --producer build/examples/shmring-frames
    python3 examples/python_consumer.py --frames 5000 --gpu torch

Exit status: 0 every frame verified, 1 a frame failed verification, 3 the
producer failed or no frame came for --timeout seconds.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

import shmring


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--producer", help="path of shmring-frames (default: build/examples/shmring-frames "
                   "or PATH); 'none' to wait for one started by hand")
    p.add_argument("--name", default=f"shmring-frames-{os.getpid()}", help="ring name")
    p.add_argument("--frames", type=int, default=2000)
    p.add_argument("--width", type=int, default=640)
    p.add_argument("--height", type=int, default=480)
    p.add_argument("--channels", type=int, default=3)
    p.add_argument("--capacity", type=int, default=8, help="slots in the ring, a power of two")
    p.add_argument("--gpu", choices=["auto", "torch", "cupy", "none"], default="auto")
    p.add_argument("--timeout", type=float, default=10.0)
    return p.parse_args()


def find_producer(arg: str | None) -> str | None:
    if arg == "none":
        return None
    if arg:
        return arg
    here = os.path.dirname(os.path.abspath(__file__))
    built = os.path.join(os.path.dirname(here), "build", "examples", "shmring-frames")
    return built if os.access(built, os.X_OK) else shutil.which("shmring-frames")


def choose_gpu(choice: str) -> tuple[str | None, Any]:
    """(name, module) of the GPU library to hand frames to, or (None, None)."""
    if choice == "none":
        return None, None
    if shmring.gpu_count() == 0:
        if choice != "auto":
            sys.exit(f"--gpu {choice}: no CUDA device visible (or shmring built without CUDA)")
        return None, None
    for name in ([choice] if choice != "auto" else ["torch", "cupy"]):
        try:
            return name, __import__(name)
        except ImportError:
            if choice != "auto":
                sys.exit(f"--gpu {choice}: {name} is not installed")
    return None, None


def percentile(values: Sequence[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q)) if values else float("nan")


def main() -> int:
    a = parse_args()
    shape = (a.height, a.width, a.channels)
    frame_bytes = a.height * a.width * a.channels
    gpu_name, gpu = choose_gpu(a.gpu)
    ring = shmring.create(a.name, capacity=a.capacity, dtype=np.uint8, shape=shape)
    producer = None
    try:
        if gpu is not None:
            ring.register_cuda()
        rx = ring.consumer()
        base = (np.arange(frame_bytes, dtype=np.uint64) * 7 % 256).astype(np.uint8)[8:]
        expected = np.empty_like(base)
        if gpu_name == "torch":
            base_gpu = gpu.from_numpy(base).cuda()
        elif gpu_name == "cupy":
            base_gpu = gpu.asarray(base)

        print(f"shmring python consumer: ring '{a.name}', {a.capacity} slots of "
              f"{a.height}x{a.width}x{a.channels} uint8 frames ({frame_bytes:,} B)")
        path = find_producer(a.producer)
        cmd = [str(x) for x in ("--name", a.name, "--frames", a.frames, "--width", a.width,
                                "--height", a.height, "--channels", a.channels,
                                "--timeout", max(1, int(a.timeout)))]
        if path:
            producer = subprocess.Popen([path, *cmd], stdout=subprocess.PIPE, text=True)
            print(f"producer: {path} (pid {producer.pid}), C++, writes each frame in place")
        else:
            print(f"waiting for: shmring-frames {' '.join(cmd)}")
        if gpu is not None:
            device = (gpu.cuda.get_device_name(0) if gpu_name == "torch"
                      else gpu.cuda.runtime.getDeviceProperties(0)["name"].decode())
            print(f"gpu:      {gpu_name} on {device}; each frame is handed over with "
                  f"{'torch.from_dlpack' if gpu_name == 'torch' else 'cupy.asarray'}(slot.cuda()), "
                  f"no copy")

        access_ns: list[int] = []
        failures = 0
        start: float | None = None
        for seq in range(a.frames):
            with rx.peek(timeout=a.timeout) as slot:
                if start is None:
                    start = time.perf_counter()
                t0 = time.perf_counter_ns()
                if gpu is None:
                    frame = slot.array  # numpy, on the slot itself
                else:
                    frame = (gpu.from_dlpack(slot.cuda()) if gpu_name == "torch"
                             else gpu.asarray(slot.cuda()))  # CUDA array on the slot itself
                access_ns.append(time.perf_counter_ns() - t0)
                flat = frame.reshape(-1)
                if gpu is None:
                    got_seq = int(flat[:8].view(np.uint64)[0])
                    np.add(base, np.uint8(seq & 0xFF), out=expected)
                    ok = got_seq == seq and np.array_equal(flat[8:], expected)
                else:  # verified by the GPU, reading the slot over the bus
                    got_seq = int.from_bytes(bytes(flat[:8].tolist()), "little")
                    body_ok = (gpu.equal(flat[8:], base_gpu + (seq & 0xFF)) if gpu_name == "torch"
                               else bool(gpu.array_equal(flat[8:], base_gpu + np.uint8(seq & 0xFF))))
                    ok = got_seq == seq and bool(body_ok)
                if not ok:
                    failures += 1
                    if failures == 1:
                        print(f"FAILED:   frame {seq} (carries sequence number {got_seq}) differs")
                del frame, flat
        assert start is not None  # set with the first frame
        elapsed = time.perf_counter() - start
    except TimeoutError:
        print(f"no frame for {a.timeout} s", file=sys.stderr)
        return 3
    finally:
        shmring.unlink(a.name, missing_ok=True)
        if producer is not None:
            try:
                out, _ = producer.communicate(timeout=a.timeout)
            except subprocess.TimeoutExpired:
                producer.kill()
                out, _ = producer.communicate()
            if out:
                print("producer: " + out.strip().removeprefix("shmring-frames: "))

    rate = a.frames / elapsed
    print(f"consumer: {a.frames:,} frames received and verified in {elapsed:.3f} s: "
          f"{rate:,.0f} frames/s, {rate * frame_bytes / 1e9:.2f} GB/s")
    what = "slot.array" if gpu is None else f"{gpu_name} array of slot.cuda()"
    print(f"zero-copy access ({what}): p50 {percentile(access_ns, 50) / 1e3:.1f} us, "
          f"p99 {percentile(access_ns, 99) / 1e3:.1f} us per {frame_bytes:,} B frame")
    if failures:
        print(f"FAILED:   {failures} of {a.frames} frames")
        return 1
    if producer is not None and producer.returncode != 0:
        print(f"FAILED:   the producer exited with status {producer.returncode}")
        return 3
    print(f"result:   OK, all {a.frames:,} frames verified")
    return 0


if __name__ == "__main__":
    sys.exit(main())
