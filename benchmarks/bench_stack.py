"""Benchmark Bayer drizzle stacking: time per frame and peak memory.

Writes a short sequence of synthetic raw DNG frames (a Bayer mosaic of sky
and stars, dithered by whole and fractional pixels, with constant-offset
maps), then stacks it with ``stack_frames`` in a fresh process and prints the
time per frame and that process's peak resident memory, next to the size of
the outputs. Stacking holds one frame at a time, so the peak does not grow
with the number of frames (only the context arrays do, by 4 bytes per output
pixel and channel per 32 frames).

Run: ``python benchmarks/bench_stack.py [--mpix 42] [--frames 4]``.
"""

import argparse
import multiprocessing
import os
import resource
import tempfile
import time

import numpy as np

from astro_offsets import OffsetMap, stack_frames
from astro_offsets.datasets import write_dng

SHAPES = {1: (816, 1224), 12: (2848, 4256), 24: (4000, 6000), 42: (5304, 7952)}


def write_sequence(folder, shape, n_frames):
    rng = np.random.default_rng(0)
    frames = []
    for k in range(n_frames):
        # Sky plus noise; stars do not change the cost of drizzle.
        mosaic = rng.normal(1500, 30, shape).astype(np.float32)
        path = os.path.join(folder, f"DSC{k:04d}.dng")
        write_dng(path, np.clip(mosaic, 0, 16383).astype(np.uint16))
        if k:
            shift = (k % 2 + 0.3 * k, k // 2 % 2 + 0.2 * k)
            OffsetMap(
                np.full(shape, shift[0], np.float32), np.full(shape, shift[1], np.float32)
            ).write(os.path.join(folder, f"DSC{k:04d}.offsets.fits"))
        frames.append(path)
    return frames


def stack_in_child(frames, queue):
    start = time.perf_counter()
    stack, results = stack_frames(frames, context=True)
    seconds = time.perf_counter() - start
    outputs = sum(
        a.nbytes for d in (stack.images, stack.weights, stack.contexts) for a in d.values()
    )
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # kB on Linux
    queue.put((seconds, peak, outputs, [r.status for r in results]))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mpix", type=int, choices=sorted(SHAPES), default=42)
    parser.add_argument("--frames", type=int, default=4)
    args = parser.parse_args()
    shape = SHAPES[args.mpix]
    with tempfile.TemporaryDirectory() as folder:
        start = time.perf_counter()
        frames = write_sequence(folder, shape, args.frames)
        print(
            f"wrote {args.frames} raw frames of {shape[1]} x {shape[0]} "
            f"({shape[0] * shape[1] / 1e6:.0f} Mpix) in {time.perf_counter() - start:.0f} s"
        )
        context = multiprocessing.get_context("spawn")
        queue = context.Queue()
        child = context.Process(target=stack_in_child, args=(frames, queue))
        child.start()
        seconds, peak, outputs, statuses = queue.get()
        child.join()
    assert statuses == ["stacked"] * args.frames, statuses
    print(
        f"Bayer drizzle (RED, GREEN, BLUE, with contexts): {seconds / args.frames:.1f} s per "
        f"frame; peak memory {peak / 1e9:.2f} GB, of which outputs {outputs / 1e9:.2f} GB"
    )


if __name__ == "__main__":
    main()
