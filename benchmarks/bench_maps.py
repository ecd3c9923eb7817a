"""Benchmark offset maps: time, memory and scaling, against other interpolators.

Prints, for random star tables:

1. the time of ``OffsetModel.to_map`` (every pixel exact) for frames of 1, 12
   and 42 Mpix and 50 to 20000 stars, and its extra peak memory;
2. on a 4256 x 2848 frame with 500 stars, the ratios against
   ``scipy.interpolate.LinearNDInterpolator`` (Delaunay; a different, simpler
   interpolant) over the whole frame, ``photutils``'
   ``ShepardIDWInterpolator`` (k=4, not by quadrant) and a per-pixel loop
   written the way the original notebook did it, both timed on a sample of pixels
   and compared per pixel;
3. ``write_maps`` over a sequence of 12-Mpix tables: time per frame with the
   writes, and how busy the cores were;
4. the fitted fields on a 12-Mpix frame (a wide-field lens, 0.05 px centroid
   noise): the time to fit, to cross-validate (``cv_rms``; ``method="auto"``
   cross-validates all its candidates while fitting) and to make the map, for
   100 to 2000 stars, and how far the thin-plate lattice strays from the
   spline itself.

Run: ``python benchmarks/bench_maps.py`` (``--quick`` for a short run).
"""

import argparse
import os
import platform
import tempfile
import time
import tracemalloc

import joblib
import numpy as np
import photutils
import scipy
from astropy.table import Table
from photutils.utils import ShepardIDWInterpolator
from scipy.interpolate import LinearNDInterpolator

import astro_offsets
from astro_offsets import OffsetModel, write_maps
from astro_offsets.datasets import CameraMotion, star_offsets

FRAMES = {"1 Mpix": (816, 1224), "12 Mpix": (2848, 4256), "42 Mpix": (5304, 7952)}
STARS = (50, 500, 5000, 20000)


def random_stars(shape, n, seed=0):
    rng = np.random.default_rng(seed)
    ny, nx = shape
    x, y = rng.uniform(0, nx - 1, n), rng.uniform(0, ny - 1, n)
    # A drift, a turn of 0.3 degrees and centroid noise: a frame of a real
    # sequence, whose map does not fold (write_maps refuses one that does).
    turn = np.deg2rad(0.3)
    return (
        x,
        y,
        5.0 + turn * (y - ny / 2) + rng.normal(0, 0.05, n),
        -3.0 - turn * (x - nx / 2) + rng.normal(0, 0.05, n),
    )


def best_time(function, repeat):
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return min(times)


def notebook_style_pixel(px, py, x, y, u, v):
    """One pixel the way the original notebook computed it (its quadrants and its loop)."""
    diff_x = px - x
    diff_y = py - y
    index, dist = [], []
    for mask in (
        (diff_x > 0) & (diff_y > 0),
        (diff_x < 0) & (diff_y > 0),
        (diff_x > 0) & (diff_y < 0),
        (diff_x < 0) & (diff_y < 0),
    ):
        distance = np.sqrt(diff_x * diff_x + diff_y * diff_y) * np.where(mask, 1, 0)
        if np.nonzero(distance)[0].size > 0:
            mindist = np.min(distance[np.nonzero(distance)])
            index.append(np.where(distance == mindist)[0][0])
            dist.append(mindist)
    weights = 1.0 / np.array(dist)
    return np.sum(weights * u[index]) / weights.sum(), np.sum(weights * v[index]) / weights.sum()


def sample_pixels(shape, n, seed=1):
    rng = np.random.default_rng(seed)
    return rng.integers(0, shape[1], n).astype(float), rng.integers(0, shape[0], n).astype(float)


def scaling_table(frames, stars, repeat):
    print(f"to_map, n_jobs=-1, every pixel exact (best of {repeat})")
    header = f"{'frame':>9} {'pixels':>11} " + "".join(f"{n:>9d} st" for n in stars)
    print(header + "   extra peak memory (500 stars)")
    for name, shape in frames.items():
        cells = []
        for n in stars:
            model = OffsetModel(*random_stars(shape, n))
            seconds = best_time(lambda m=model, s=shape: m.to_map(s, n_jobs=-1), repeat)
            cells.append(f"{seconds:10.3f} s")
        model = OffsetModel(*random_stars(shape, 500))
        tracemalloc.start()
        omap = model.to_map(shape, n_jobs=-1)
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        outputs = omap.x_offset.nbytes + omap.y_offset.nbytes
        extra = (peak - outputs) / outputs
        print(
            f"{name:>9} {shape[0] * shape[1]:>11,d} "
            + "".join(cells)
            + f"   {(peak - outputs) / 1e6:6.1f} MB = {extra:.2f} x the maps"
        )
        del omap


def comparisons(repeat, sample):
    shape = FRAMES["12 Mpix"]
    ny, nx = shape
    x, y, u, v = random_stars(shape, 500)
    model = OffsetModel(x, y, u, v)
    ours = best_time(lambda: model.to_map(shape, n_jobs=-1), repeat)
    per_pixel_ours = ours / (nx * ny)
    print(
        f"\n{nx} x {ny} frame, 500 stars; astro_offsets to_map(n_jobs=-1): {ours:.3f} s "
        f"({per_pixel_ours * 1e9:.1f} ns per pixel)"
    )

    def delaunay():
        interp = LinearNDInterpolator(np.column_stack([x, y]), np.column_stack([u, v]))
        gy, gx = np.mgrid[0:ny, 0:nx]
        return interp(gx, gy)

    scipy_seconds = best_time(delaunay, 1)
    print(
        f"  scipy LinearNDInterpolator, whole frame:  {scipy_seconds:8.3f} s   "
        f"astro_offsets is {scipy_seconds / ours:7.1f} x faster"
    )

    px, py = sample_pixels(shape, sample)
    # One interpolator per axis: it takes one value per star.
    points = np.column_stack([x, y])
    shepards = [ShepardIDWInterpolator(points, values) for values in (u, v)]
    start = time.perf_counter()
    for shepard in shepards:
        shepard(np.column_stack([px, py]), n_neighbors=4)
    per_pixel = (time.perf_counter() - start) / sample
    print(
        f"  photutils ShepardIDWInterpolator k=4:     {per_pixel * nx * ny:8.3f} s "
        f"(from {sample} pixels)   astro_offsets is {per_pixel / per_pixel_ours:7.1f} x "
        "faster per pixel"
    )

    notebook_sample = max(sample // 20, 200)
    start = time.perf_counter()
    for a, b in zip(px[:notebook_sample], py[:notebook_sample], strict=True):
        notebook_style_pixel(a, b, x, y, u, v)
    per_pixel = (time.perf_counter() - start) / notebook_sample
    print(
        f"  notebook-style per-pixel loop:            {per_pixel * nx * ny:8.1f} s "
        f"(from {notebook_sample} pixels)   astro_offsets is {per_pixel / per_pixel_ours:7.0f} x "
        "faster per pixel"
    )


def sequence(n_frames):
    shape = FRAMES["12 Mpix"]
    with tempfile.TemporaryDirectory() as folder:
        tables = []
        for k in range(n_frames):
            x, y, u, v = random_stars(shape, 500, seed=k)
            path = os.path.join(folder, f"frame{k:04d}.offsets_table.fits")
            Table({"xcentroid": x, "ycentroid": y, "xoffset": u, "yoffset": v}).write(path)
            tables.append(path)
        before, start = os.times(), time.perf_counter()
        results = write_maps(tables, shape, n_jobs=-1, method="quadrant")
        after, wall = os.times(), time.perf_counter() - start
        assert all(r.status == "written" for r in results)
        cpu = (after.user - before.user) + (after.system - before.system)
        size = sum(os.path.getsize(r.output) for r in results) / n_frames / 1e6
    print(
        f"\nwrite_maps over {n_frames} tables of a 12-Mpix sequence (500 stars each, "
        f"{size:.0f} MB per map file): {wall / n_frames:.3f} s per frame including the write, "
        f"cores busy {cpu / wall / joblib.cpu_count():.0%} of the time"
    )


def fitted_fields(stars=(100, 500, 1500, 2000)):
    shape = FRAMES["12 Mpix"]
    ny, nx = shape
    lens = CameraMotion(shape, rotation_deg=0.4, pole=(-1500.0, 6000.0), barrel=4e-9)
    fields = (
        ("quadrant", {}),
        ("polynomial", {"degree": 4}),
        ("thin-plate", {"smoothing": 0.01}),
        ("auto", {}),
    )
    print(f"\nfitted fields on a {nx} x {ny} frame, n_jobs=-1: fit / cross-validate / map (s)")
    print(f"{'stars':>6} " + "".join(f"{name:>24}" for name, _ in fields) + "   auto chose")
    for n in stars:
        columns = star_offsets(np.random.default_rng(n), lens, shape, n)[:4]
        cells = []
        for name, options in fields:
            start = time.perf_counter()
            model = OffsetModel(*columns, method=name, **options)
            fit = time.perf_counter() - start
            start = time.perf_counter()
            model.cv_rms  # noqa: B018 (computed on first use)
            cv = time.perf_counter() - start
            start = time.perf_counter()
            model.to_map(shape, n_jobs=-1)
            cells.append(f"{fit:7.2f} {cv:7.2f} {time.perf_counter() - start:7.2f}")
        print(f"{n:>6} " + "".join(f"{cell:>24}" for cell in cells) + f"   {model!r}")
    # The thin-plate map against the spline itself, at random points.
    model = OffsetModel(
        *star_offsets(np.random.default_rng(0), lens, shape, 500)[:4],
        method="thin-plate",
        smoothing=0.01,
    )
    px, py = sample_pixels(shape, 20000)
    field = model._field
    exact = field.spline(np.column_stack([field.norm.u(px), field.norm.v(py)])).T
    print(
        "thin-plate lattice (16 px, Catmull-Rom) against the spline, 500 stars, smoothing "
        f"0.01: largest difference {np.abs(np.array(model(px, py)) - exact).max():.2e} px"
    )


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats and samples")
    parser.add_argument("--frames", type=int, default=20, help="tables in the sequence run")
    args = parser.parse_args()
    repeat = 1 if args.quick else 3
    print(
        f"astro_offsets {astro_offsets.__version__}, numpy {np.__version__}, "
        f"scipy {scipy.__version__}, photutils {photutils.__version__}, "
        f"joblib {joblib.__version__}"
    )
    print(
        f"Python {platform.python_version()} on {platform.machine()}, "
        f"{os.cpu_count()} cores ({joblib.cpu_count()} usable)\n"
    )
    scaling_table(FRAMES, STARS, repeat)
    comparisons(repeat, 2000 if args.quick else 20000)
    sequence(args.frames)
    fitted_fields((100, 500) if args.quick else (100, 500, 1500, 2000))


if __name__ == "__main__":
    main()
