#!/usr/bin/env python3
"""A Python subscriber of the shmring-camera broadcast ring.

Joins the ring that ``shmring-camera camera`` creates (waiting for it to
appear) and checks every frame through a numpy view of the slot itself: the
64-byte header (magic, size, counter), the checksum (the wrapping sum of the
pixels as little-endian 64-bit words) and every pixel byte (byte i of frame n
is (7 * i + n) mod 256). Nothing is copied out of the ring. A recorder
(``shmring-camera record``) can read the same frames at the same time: each
subscriber of a broadcast ring gets every frame.

    build/examples/shmring-camera camera --name cam --frames 300 --subscribers 2 &
    build/examples/shmring-camera record --name cam --frames 300 --out frames.raw &
    python3 examples/camera_viewer.py --name cam --frames 300

Exit status: 0 every frame verified, 1 a frame failed verification, 3 no
ring or no frame for --timeout seconds.
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np

import shmring

MAGIC = 0x4D435253  # "SRCM", as in examples/camera.cpp
HEADER = np.dtype([("magic", "<u4"), ("width", "<u4"), ("height", "<u4"), ("channels", "<u4"),
                   ("counter", "<u8"), ("checksum", "<u8"), ("reserved", "u1", 32)])
assert HEADER.itemsize == 64


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--name", default="shmring-camera", help="the camera's ring")
    p.add_argument("--frames", type=int, default=300, help="frames to read and check")
    p.add_argument("--timeout", type=float, default=10.0,
                   help="seconds to wait for the ring, and for each frame")
    return p.parse_args()


def open_ring(name: str, timeout: float) -> shmring.Segment:
    deadline = time.monotonic() + timeout
    while True:
        try:
            return shmring.open(name, kind="broadcast")
        except shmring.NotFoundError:
            if time.monotonic() >= deadline:
                raise
            time.sleep(0.01)


def check_frame(frame: np.ndarray, expected: int, pattern: np.ndarray) -> str | None:
    """What is wrong with `frame` (uint8 view of one slot), or None."""
    if frame.size < HEADER.itemsize:
        return f"{frame.size} bytes, shorter than a header"
    h = frame[:HEADER.itemsize].view(HEADER)[0]
    pixels = frame[HEADER.itemsize:]
    if h["magic"] != MAGIC:
        return f"magic {int(h['magic']):#x}"
    if int(h["counter"]) != expected:
        return f"counter {int(h['counter'])}"
    shape = (int(h["height"]), int(h["width"]), int(h["channels"]))
    if pixels.size != shape[0] * shape[1] * shape[2]:
        return f"{pixels.size} pixel bytes for a {shape} frame"
    if int(pixels.view("<u8").sum(dtype=np.uint64)) != int(h["checksum"]):
        return "checksum"
    image = pixels.reshape(shape)  # the frame as an image, still on the slot
    if not np.array_equal(image.reshape(-1), pattern + np.uint8(expected & 0xFF)):
        return "pixels"
    return None


def main() -> int:
    args = parse_args()
    try:
        seg = open_ring(args.name, args.timeout)
    except shmring.Error as e:
        print(f"camera_viewer: {e}", file=sys.stderr)
        return 3
    # "next": the frames published from now on; the camera waits for its
    # subscribers before the first one.
    sub = seg.subscriber(at="next")
    pattern: np.ndarray | None = None
    verified = failed = 0
    start = time.monotonic()
    for n in range(args.frames):
        try:
            slot = sub.peek(timeout=args.timeout)
        except TimeoutError:
            print(f"camera_viewer: no frame for {args.timeout} s after {n}", file=sys.stderr)
            return 3
        with slot:
            frame: np.ndarray = slot.array  # uint8, a view of the slot itself: no copy
            if pattern is None:
                count = frame.size - HEADER.itemsize
                pattern = (np.arange(count, dtype=np.uint64) * 7 % 256).astype(np.uint8)
            problem = check_frame(frame, n, pattern)
            del frame  # the view goes before the slot is released
        if problem is None:
            verified += 1
        else:
            failed += 1
            if failed == 1:
                print(f"camera_viewer: frame {n} failed verification: {problem}", file=sys.stderr)
    secs = time.monotonic() - start
    sub.close()
    if failed:
        print(f"viewer:   FAILED, {failed} of {args.frames} frames failed verification")
        return 1
    print(f"viewer:   OK, all {verified} frames verified through numpy views "
          f"({verified / max(secs, 1e-9):.0f} frames/s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
