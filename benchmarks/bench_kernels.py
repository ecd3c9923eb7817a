"""Benchmark the drizzle kernels: against square under rotation, flux, cost, sharpness.

Four tables, each from the package's own `Stacker` and `stack_frames`:

1. **Against square under rotation.** A frame of 150 Gaussian stars (noise-free, no
   sky), turned by an angle about its centre and shifted by (0.3, 0.2) px, is
   drizzled alone with its true map by each kernel; on the stars' pixels (those where
   the square kernel's image is at least 5 % of its peak) the relative difference
   from square's image: median and 99th percentile. For sharp stars (FWHM 2 px) and
   well-sampled ones (FWHM 3.5 px). ``auto`` is the default: turbo or square per frame.
2. **Flux.** Eight such frames, dithered by up to a pixel and turned by 0 or up to 10
   degrees, stacked at scale 2, at pixfrac 0.5, and both: the stack's total flux
   against the stars' (the stars lie 40 px inside the frame) and the share of empty
   output pixels (NaN, whose flux is missing from the sum).
3. **Cost.** Seconds per 10.8-Mpix frame (4000 x 2700) drizzled by two worker
   processes (``n_jobs=2``), best of ``--repeat`` runs of two frames each, a frame
   turned by 0.3 degree.
4. **Sharpness** (``--sharpness``): the wide-field sequence of
   ``bench_pipeline.py`` (its module makes it, its ``tables`` and ``maps --method
   auto`` register it, Siril stacks it as there), stacked by `stack_frames` with
   each kernel and pixfrac; the median FWHM and centroid RMS of its measured stars
   (``bench_pipeline.accuracy``) against Siril's stack, and the wall time.

Run::

    python benchmarks/bench_kernels.py                      # tables 1-3, a minute or two
    python benchmarks/bench_kernels.py --sharpness 2000x1350 --frames 8   # and table 4

Timings are noisy on a shared machine: the load average is printed with them.
"""

import argparse
import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

from astro_offsets import OffsetMap, Stacker, stack_frames
from astro_offsets._cli import main as cli
from astro_offsets.datasets import render_stars
from astro_offsets.stack import frame_kernel

SHAPE = (400, 400)
KERNELS = ("auto", "turbo", "square", "gaussian", "lanczos3", "point")
FWHM_PER_SIGMA = 2.3548


def rotation(shape, angle_deg, shift):
    """Return ``to_frame(x, y)`` and the true `OffsetMap` of a turn about the centre and a shift."""
    ny, nx = shape
    centre = np.array([[(nx - 1) / 2], [(ny - 1) / 2]])
    turn = np.deg2rad(angle_deg)
    matrix = np.array([[np.cos(turn), -np.sin(turn)], [np.sin(turn), np.cos(turn)]])
    shift = np.asarray(shift, float)[:, None]

    def to_frame(x, y):
        return matrix @ (np.vstack([x, y]) - centre) + centre + shift

    yy, xx = np.mgrid[0:ny, 0:nx].astype(float)
    points = np.vstack([xx.ravel(), yy.ravel()])
    reference = matrix.T @ (points - centre - shift) + centre
    offsets = (points - reference).reshape(2, ny, nx)
    return to_frame, OffsetMap(offsets[0], offsets[1])


def drizzle(frames, kernel, pixfrac=1.0, scale=1.0, shape=SHAPE):
    pixfrac = 1.0 if kernel.startswith("lanczos") else pixfrac
    with Stacker(shape, kernel=kernel, pixfrac=pixfrac, scale=scale, context=False) as stacker:
        for data, omap in frames:
            stacker.add(data, omap)
        return np.array(stacker.stack().images["SCI"], dtype=np.float64)


def stars(rng, n, shape, margin):
    ny, nx = shape
    x = rng.uniform(margin, nx - 1 - margin, n)
    y = rng.uniform(margin, ny - 1 - margin, n)
    return x, y, np.full(n, 10000.0)


def against_square():
    print("1. each kernel against square, one frame turned about its centre: relative")
    print("   difference on the stars' pixels (square >= 5 % of its peak), median / 99th pct")
    x, y, flux = stars(np.random.default_rng(1), 150, SHAPE, 20)
    angles = (0.0, 0.3, 0.5, 1.0, 2.0, 10.0, 45.0)
    shown = [k for k in KERNELS if k != "square"]
    for fwhm in (2.0, 3.5):
        print(f"\n   stars of FWHM {fwhm} px")
        print(f"   {'turn':>6}  {'auto takes':>10}" + "".join(f"{k:>20}" for k in shown))
        for angle in angles:
            to_frame, omap = rotation(SHAPE, angle, (0.3, 0.2))
            image = render_stars(SHAPE, *to_frame(x, y), flux, fwhm / FWHM_PER_SIGMA)
            frame = [(image.astype(np.float32), omap)]
            square = drizzle(frame, "square")
            on_stars = square >= 0.05 * np.nanmax(square)
            cells = []
            for kernel in shown:
                difference = np.abs(drizzle(frame, kernel)[on_stars] / square[on_stars] - 1)
                difference = difference[np.isfinite(difference)]  # point leaves holes
                median, p99 = 100 * np.median(difference), 100 * np.percentile(difference, 99)
                cells.append(f"{median:7.3f}% /{p99:7.3f}%")
            taken = frame_kernel("auto", omap)
            print(f"   {angle:5.1f}°  {taken:>10}" + "".join(f"{c:>20}" for c in cells))


def flux():
    print("\n2. total flux of 8 dithered frames against the stars' (and empty output pixels)")
    rng = np.random.default_rng(3)
    x, y, fluxes = stars(rng, 100, SHAPE, 40)
    settings = ((2.0, 1.0), (1.0, 0.5), (2.0, 0.5))
    header = "".join(f"{f'scale {s:g}, pixfrac {p:g}':>26}" for s, p in settings)
    print(f"   {'turn':>10} {'kernel':>9}{header}")
    for angle in (0.0, 10.0):
        frames = []
        for k in range(8):
            shift = rng.uniform(-1, 1, 2) if k else (0.0, 0.0)
            to_frame, omap = rotation(SHAPE, angle * k / 7, shift)
            image = render_stars(SHAPE, *to_frame(x, y), fluxes, 1.0)
            frames.append((image.astype(np.float32), omap))
        for kernel in KERNELS:
            cells = []
            for scale, pixfrac in settings:
                image = drizzle(frames, kernel, pixfrac, scale)
                error = np.nansum(image) / fluxes.sum() - 1
                cells.append(f"{error:+9.4%} ({np.isnan(image).mean():6.2%} empty)")
            turn = f"0-{angle:g}°" if angle else "0°"
            print(f"   {turn:>10} {kernel:>9}" + "".join(f"{c:>26}" for c in cells))
    print("   (lanczos3 takes no pixfrac: always 1)")


def cost(repeat):
    shape = (2700, 4000)
    print(f"\n3. seconds per {shape[1]} x {shape[0]} frame, n_jobs=2, best of {repeat}; {load()}")
    rng = np.random.default_rng(0)
    data = rng.normal(100.0, 5.0, shape).astype(np.float32)
    yy, xx = np.mgrid[0 : shape[0], 0 : shape[1]].astype(np.float32)
    turn = np.deg2rad(0.3)
    dx, dy = xx - shape[1] / 2, yy - shape[0] / 2
    omap = OffsetMap(
        dx * (1 - np.cos(turn)) + dy * np.sin(turn) + 3.3,
        dy * (1 - np.cos(turn)) - dx * np.sin(turn) - 2.2,
    )
    del xx, yy, dx, dy
    times = {kernel: [] for kernel in KERNELS}
    for _ in range(repeat):
        for kernel in KERNELS:
            with Stacker(shape, kernel=kernel, n_jobs=2, context=False) as stacker:
                stacker.add(data)  # the workers start
                stacker.wait()
                start = time.perf_counter()
                for _ in range(2):
                    stacker.add(data, omap)
                stacker.wait()
                times[kernel].append((time.perf_counter() - start) / 2)
    for kernel, spent in times.items():
        print(f"   {kernel:>9} {min(spent):6.2f} s")
    print(f"   ({load()}; auto took {frame_kernel('auto', omap)} at 0.3°)")


def load():
    return "load average " + " ".join(f"{v:.2f}" for v in os.getloadavg())


def sharpness(size, n_frames, seed, grid):
    sys.path.insert(0, str(Path(__file__).parent))
    import bench_pipeline as pipeline

    folder = Path(tempfile.mkdtemp(prefix="bench_kernels_"))
    try:
        sequence = pipeline.make_sequence(folder, size, n_frames, seed, None)
        measured = pipeline.test_stars(sequence)
        names = [str(sequence.folder / name) for name in sequence.frames]
        ny, nx = size
        print(f"\n4. sharpness: bench_pipeline's sequence, {n_frames} frames of {nx} x {ny}")
        reference = str(sequence.folder / sequence.reference)
        tables = [p.replace(".fits", ".offsets_table.fits") for p in names[1:]]
        with (
            open(os.devnull, "w") as quiet,
            contextlib.redirect_stdout(quiet),
            contextlib.redirect_stderr(quiet),
        ):
            cli(["tables", *names, "--reference", reference])
            cli(["maps", *tables, "--image", reference, "--method", "auto"])
        rows = []
        siril = shutil.which("siril-cli")
        if siril:
            version = subprocess.run([siril, "--version"], capture_output=True, text=True)
            _, path, _ = pipeline.run_siril(siril, sequence, None)
            from astropy.io import fits

            image = fits.getdata(path).astype(np.float64)
            how = pipeline.orientation(image, sequence.x[measured], sequence.y[measured])
            image = pipeline.unflip(image, how)
            name = version.stdout.strip() or "Siril"
            rows.append((name, "", pipeline.accuracy(image, sequence, measured), None))
        for kernel, pixfrac in grid:
            start = time.perf_counter()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                stack, _ = stack_frames(names, kernel=kernel, pixfrac=pixfrac, n_jobs=-1)
            spent = time.perf_counter() - start
            image = np.array(stack.images["SCI"], dtype=np.float64)
            figures = pipeline.accuracy(image, sequence, measured)
            empty = float(np.mean(stack.weights["SCI"] == 0))
            label = f"{kernel} ({', '.join(sorted(set(stack.meta['kernels'])))})"
            rows.append((label, f"{pixfrac:g}", figures, (spent, empty)))
        print(f"   {'stack':<28}{'pixfrac':>8}{'FWHM':>8}{'RMS':>9}{'time':>8}{'empty':>8}")
        for label, pixfrac, figures, extra in rows:
            tail = "" if extra is None else f"{extra[0]:7.1f}s{extra[1]:8.2%}"
            print(
                f"   {label:<28}{pixfrac:>8}{figures['fwhm']:7.3f}px{figures['rms']:7.3f}px{tail}"
            )
        print(f"   ({len(names)} frames, {int(measured.sum())} stars measured; {load()})")
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def parse_size(text):
    nx, ny = (int(v) for v in text.lower().split("x"))
    return ny, nx


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=2, help="runs of the cost table")
    parser.add_argument("--no-cost", dest="cost", action="store_false")
    parser.add_argument("--sharpness", type=parse_size, metavar="WxH", help="table 4's size")
    parser.add_argument("--frames", type=int, default=8, help="table 4's frames")
    parser.add_argument("--seed", type=int, default=0, help="table 4's sky")
    parser.add_argument(
        "--grid",
        default="auto:1,auto:0.9,auto:0.8,auto:0.7,square:1,square:0.8,gaussian:1,gaussian:0.8,"
        "lanczos3:1,point:1",
        help="table 4's stacks, KERNEL:PIXFRAC,...",
    )
    parser.add_argument("--only-sharpness", action="store_true")
    args = parser.parse_args()
    with warnings.catch_warnings():
        # drizzle: gaussian and lanczos do not conserve flux (table 2 says how much).
        warnings.simplefilter("ignore")
        if not args.only_sharpness:
            against_square()
            flux()
            if args.cost:
                cost(args.repeat)
    if args.sharpness:
        grid = [(k, float(p)) for k, p in (cell.split(":") for cell in args.grid.split(","))]
        sharpness(args.sharpness, args.frames, args.seed, grid)


if __name__ == "__main__":
    main()
