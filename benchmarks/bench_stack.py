"""Benchmark stacking: time per frame, where it goes, and the peak memory of all processes.

Writes a sequence of synthetic frames, mono FITS (``--kind mono``, 4000 x
2700 by default) or Bayer raw DNG files (``--kind raw``, 7952 x 5304), each
with a smooth map that shifts, rotates and stretches it; longer sequences
reuse four distinct frames through symbolic links, which read the same. Each
run stacks the sequence with ``stack_frames`` in a fresh process, while this
process samples the memory of that process and of its workers: the peak of
their summed resident memory (RSS, which counts memory they share once per
process) and of their proportional shares (PSS, which counts it once).

Printed per run: the time per frame (overall, and the median interval
between frames once the workers run), the main process's time in reading
frames, reading maps, finding hot pixels, preparing frames for the workers
(``Stacker.add`` less its wait) and waiting for them, the time of outlier
rejection's own steps (keeping and drizzling frames alone, the median, the
masks), the workers' CPU time per frame, and the memory peaks. With several
kernels, ``--reject both`` or ``--repeat``, runs alternate, and the minimum
and median of each figure are printed at the end, and with ``--reject
both`` the ratio of the stack's time with rejection to its time without.

Run: ``python benchmarks/bench_stack.py [--kind raw] [--frames 10] [--repeat 3]
[--kernel square,turbo] [--reject off|on|both] [--jobs -1] [--context] [--size NY NX]``.
"""

import argparse
import multiprocessing
import os
import statistics
import sys
import tempfile
import time

import numpy as np
import psutil

SIZES = {"mono": (2700, 4000), "raw": (5304, 7952)}
DISTINCT = 4


def write_sequence(folder, kind, shape, n_frames):
    """Write the frames and their maps; return the frame paths."""
    from astropy.io import fits

    from astro_offsets import OffsetMap
    from astro_offsets.datasets import write_dng

    rng = np.random.default_rng(0)
    ny, nx = shape
    y = np.linspace(-1, 1, ny, dtype=np.float32)[:, np.newaxis]
    x = np.linspace(-1, 1, nx, dtype=np.float32)[np.newaxis, :]
    suffix = ".fits" if kind == "mono" else ".dng"
    frames = []
    for k in range(n_frames):
        path = os.path.join(folder, f"DSC{k:04d}{suffix}")
        frames.append(path)
        source = k % DISTINCT
        if source != k:
            # The same pixels; the reference's copies move by a map of zeros.
            os.symlink(frames[source], path)
            if source == 0 and k == DISTINCT:
                OffsetMap(np.zeros(shape, np.float32), np.zeros(shape, np.float32)).write(
                    os.path.join(folder, f"DSC{k:04d}.offsets.fits")
                )
            else:
                origin = DISTINCT if source == 0 else source
                os.symlink(
                    os.path.join(folder, f"DSC{origin:04d}.offsets.fits"),
                    os.path.join(folder, f"DSC{k:04d}.offsets.fits"),
                )
            continue
        # Sky and noise; stars do not change the cost of stacking.
        image = rng.normal(1500, 30, shape).astype(np.float32)
        if kind == "mono":
            fits.PrimaryHDU(image).writeto(path)
        else:
            write_dng(path, np.clip(image, 0, 16383).astype(np.uint16))
        if k:
            # A drift, a rotation of 0.05 degree a frame, a stretch at the corners.
            angle = np.deg2rad(0.05 * k)
            x_offset = 1.3 * k + angle * y * ny / 2 + 0.8 * x * y
            y_offset = -0.7 * k - angle * x * nx / 2 + 0.5 * x * x + 0 * y
            OffsetMap(x_offset.astype(np.float32), y_offset.astype(np.float32)).write(
                os.path.join(folder, f"DSC{k:04d}.offsets.fits")
            )
    return frames


def stack_in_child(frames, options, queue):
    """Stack the frames, timing the main process's parts; put the figures on ``queue``."""
    from astro_offsets import OffsetMap, Stacker
    from astro_offsets.stack import _run, _stack_frames
    from astro_offsets.stack._rejection import Rejection

    spent = {"read": 0.0, "maps": 0.0, "hot pixels": 0.0, "add": 0.0, "wait": 0.0}
    spent.update({"keep": 0.0, "median": 0.0, "masks": 0.0})

    def timed(key, function):
        def wrapper(*args, **kwargs):
            start = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                spent[key] += time.perf_counter() - start

        return wrapper

    _run.read_frame = timed("read", _run.read_frame)
    _run.hot_pixels = timed("hot pixels", _run.hot_pixels)
    read_map = OffsetMap.read.__func__
    OffsetMap.read = classmethod(timed("maps", read_map))
    Stacker.add = timed("add", Stacker.add)
    Rejection.add = timed("keep", Rejection.add)
    Rejection.combine = timed("median", Rejection.combine)
    Rejection.mask = timed("masks", Rejection.mask)
    wait = timed("wait", Stacker.wait)

    def wait_in_add(self):
        # Only the waits within add, which are not its own work; the last
        # wait, in stack(), counts as drizzle.
        if sys._getframe(1).f_code.co_name == "add":
            return wait(self)
        return Stacker.wait.__wrapped__(self)

    wait_in_add.__wrapped__ = Stacker.wait
    Stacker.wait = wait_in_add
    done = []
    start = time.perf_counter()
    _, results = _stack_frames.stack_frames(
        frames, callback=lambda result: done.append(time.perf_counter()), **options
    )
    seconds = time.perf_counter() - start
    workers = psutil.Process().children(recursive=True)
    worker_cpu = sum(p.cpu_times().user + p.cpu_times().system for p in workers)
    # A process of multiprocessing's waits at exit for loky's workers, which
    # wait to be told: stop them.
    from joblib.externals.loky import get_reusable_executor

    get_reusable_executor().shutdown(wait=True)
    assert [r.status for r in results] == ["stacked"] * len(frames), results
    spent["add"] -= spent["wait"]  # add waits for the previous frame
    intervals = np.diff(done[1:]) if len(done) > 2 else [seconds / len(frames)]
    queue.put(
        {
            "seconds": seconds,
            "per frame": seconds / len(frames),
            "steady": float(np.median(intervals)),
            "worker cpu": worker_cpu / len(frames),
            **{key: value / len(frames) for key, value in spent.items()},
        }
    )


def tree_memory(process):
    """Return (sum of RSS, sum of PSS) of a process and its descendants, in bytes."""
    rss = pss = 0
    for p in [process, *process.children(recursive=True)]:
        try:
            info = p.memory_full_info()
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        rss += info.rss
        pss += getattr(info, "pss", info.rss)
    return rss, pss


def run(frames, options):
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    child = context.Process(target=stack_in_child, args=(frames, options, queue))
    child.start()
    watched = psutil.Process(child.pid)
    peak_rss = peak_pss = 0
    while child.is_alive() and queue.empty():
        try:
            rss, pss = tree_memory(watched)
        except psutil.NoSuchProcess:
            break
        peak_rss, peak_pss = max(peak_rss, rss), max(peak_pss, pss)
        time.sleep(0.05)
    child.join()
    if queue.empty():
        raise RuntimeError(f"the stacking process failed (exit status {child.exitcode})")
    figures = queue.get()
    figures.update({"peak RSS": peak_rss / 1e9, "peak PSS": peak_pss / 1e9})
    return figures


def show(label, figures):
    print(
        f"{label}: {figures['per frame']:.2f} s/frame ({figures['steady']:.2f} s steady); "
        f"main: read {figures['read']:.2f}, maps {figures['maps']:.2f}, "
        f"hot pixels {figures['hot pixels']:.2f}, prepare {figures['add']:.2f}, "
        f"wait {figures['wait']:.2f}; rejection: keep {figures['keep']:.2f}, "
        f"median {figures['median']:.2f}, masks {figures['masks']:.2f}; "
        f"workers' CPU {figures['worker cpu']:.2f} s/frame; "
        f"peak RSS {figures['peak RSS']:.2f} GB, PSS {figures['peak PSS']:.2f} GB",
        flush=True,
    )


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kind", choices=sorted(SIZES), default="raw")
    parser.add_argument("--size", type=int, nargs=2, metavar=("NY", "NX"))
    parser.add_argument("--frames", type=int, default=10)
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--kernel", default="turbo", help="comma-separated, run alternately")
    parser.add_argument(
        "--reject", choices=("off", "on", "both"), default="off", help="outlier rejection"
    )
    parser.add_argument("--jobs", type=int, default=-1)
    parser.add_argument("--context", action="store_true", help="keep the contexts")
    parser.add_argument("--keep-hot-pixels", action="store_true")
    args = parser.parse_args()
    shape = tuple(args.size) if args.size else SIZES[args.kind]
    kernels = args.kernel.split(",")
    print(
        f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}; "
        f"{args.frames} {args.kind} frames of {shape[1]} x {shape[0]} "
        f"({shape[0] * shape[1] / 1e6:.1f} Mpix), n_jobs={args.jobs}, "
        f"contexts {'kept' if args.context else 'not kept'}",
        flush=True,
    )
    with tempfile.TemporaryDirectory() as folder:
        start = time.perf_counter()
        frames = write_sequence(folder, args.kind, shape, args.frames)
        # On disk before the first run: its writing back would slow that run.
        os.sync()
        print(f"wrote the sequence in {time.perf_counter() - start:.0f} s", flush=True)
        rejects = {"off": [False], "on": [True], "both": [False, True]}[args.reject]
        variants = [(kernel, reject) for kernel in kernels for reject in rejects]
        runs = {variant: [] for variant in variants}
        for repeat in range(args.repeat):
            for kernel, reject in variants:
                options = {
                    "kernel": kernel,
                    "n_jobs": args.jobs,
                    "context": args.context,
                    "mask_hot_pixels": not args.keep_hot_pixels,
                    "reject": reject,
                }
                figures = run(frames, options)
                runs[kernel, reject].append(figures)
                show(f"run {repeat + 1}, {name(kernel, reject)}", figures)
    if args.repeat > 1:
        for variant, figures in runs.items():
            print(f"{name(*variant)}, min / median of {args.repeat} runs:")
            for key in figures[0]:
                values = [f[key] for f in figures]
                print(f"  {key:12} {min(values):7.2f} {statistics.median(values):7.2f}")
    if args.reject == "both":
        for kernel in kernels:
            ratios = [
                on["per frame"] / off["per frame"]
                for off, on in zip(runs[kernel, False], runs[kernel, True], strict=True)
            ]
            print(
                f"{kernel}: the stack with rejection takes {statistics.median(ratios):.2f} "
                f"times as long as without (median of {len(ratios)} alternating pairs; "
                f"{', '.join(f'{r:.2f}' for r in ratios)})"
            )


def name(kernel, reject):
    return f"{kernel}, {'rejection' if reject else 'no rejection'}"


if __name__ == "__main__":
    main()
