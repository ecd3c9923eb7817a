"""Benchmark the fields of turned, flipped and distorted frames against the known truth.

Prints, for random stars over a 4000 x 2700 frame (0.05 px centroid noise),
the RMS error of the field between stars (at 20000 random points) against the
true offsets, and the time to fit the field, for:

- the literal quadrant field of the raw offsets (``trend=None``, the default
  before the trend);
- the quadrant field on an affine trend (``trend="affine"``);
- a polynomial of degree 3, and ``method="auto"``, on the same trend;

for frames turned about their centre by 0.05, 0.5 and 2 degrees and by 180
(a meridian flip), through a wide-field barrel lens, and with a local
distortion no low-order polynomial follows; with 300 and 1500 stars. The
table is the evidence behind the default ``maps`` method (docs/methods.rst).

Run: ``python benchmarks/bench_trend.py`` (``--quick``: 300 stars only).
"""

import argparse
import time

import numpy as np

import astro_offsets
from astro_offsets import OffsetModel
from astro_offsets.datasets import CameraMotion, LocalDistortion, star_offsets

SHAPE = (2700, 4000)
CENTRE = ((SHAPE[1] - 1) / 2, (SHAPE[0] - 1) / 2)
NOISE = 0.05
LENS = 4e-9  # barrel: 2.5 px at the corners of 4000 x 2700
# The sky drifts across the lens too: the lens shows in the offsets.
DRIFT = (40.0, -25.0)


def cases():
    """The frames: a name and a motion with ``offset(x, y)``."""
    for rotation in (0.05, 0.5, 2.0, 180.0):
        yield f"{rotation:g} deg", CameraMotion(SHAPE, rotation_deg=rotation, pole=CENTRE, barrel=0)
    yield (
        "180 deg + lens",
        CameraMotion(SHAPE, drift=DRIFT, rotation_deg=180.0, pole=CENTRE, barrel=LENS),
    )
    yield (
        "0.5 deg + lens + bump",
        LocalDistortion(
            CameraMotion(SHAPE, drift=DRIFT, rotation_deg=0.5, pole=CENTRE, barrel=LENS),
            (3000.0, 700.0),
            250.0,
            (0.6, -0.4),
        ),
    )


FIELDS = (
    ("quadrant, no trend", {"trend": None}),
    ("quadrant + affine", {}),
    ("polynomial 3 + affine", {"method": "polynomial", "degree": 3}),
    ("auto + affine", {"method": "auto"}),
)


def error_between_stars(model, motion, n=20000):
    rng = np.random.default_rng(99)
    px, py = rng.uniform(0, SHAPE[1] - 1, n), rng.uniform(0, SHAPE[0] - 1, n)
    dx, dy = model(px, py)
    tx, ty = motion.offset(px, py)
    return float(np.sqrt(np.mean((dx - tx) ** 2 + (dy - ty) ** 2)))


def table(star_counts):
    print(
        f"RMS error between stars against the truth (px), {SHAPE[1]} x {SHAPE[0]}, "
        f"{NOISE} px noise; fit time (s)"
    )
    header = f"{'stars':>5} {'frame':>22} " + "".join(f"{name:>26}" for name, _ in FIELDS)
    print(header + "   auto chose")
    for n in star_counts:
        for name, motion in cases():
            columns = star_offsets(np.random.default_rng(n), motion, SHAPE, n, noise=NOISE)[:4]
            cells = []
            for _, options in FIELDS:
                start = time.perf_counter()
                model = OffsetModel(*columns, **options)
                seconds = time.perf_counter() - start
                cells.append(f"{error_between_stars(model, motion):10.3f} ({seconds:5.2f} s)")
            chosen = f"{model.method} {model._method.describe(model._value)}"
            print(f"{n:>5} {name:>22} " + "".join(f"{c:>26}" for c in cells) + f"   {chosen}")


def map_time(repeat=5):
    """The CPU time of to_map with and without the trend (the kernel adds it per pixel).

    CPU time of one worker: on a machine shared with other work, wall-clock
    times vary by a factor of two from run to run.
    """
    shape = (2848, 4256)
    motion = CameraMotion(shape, rotation_deg=0.5, barrel=LENS)
    print(
        f"\nto_map of the quadrant field, {shape[1]} x {shape[0]}, n_jobs=1, CPU time "
        f"(best of {repeat})"
    )
    for n in (500, 5000):
        columns = star_offsets(np.random.default_rng(0), motion, shape, n, noise=NOISE)[:4]
        models = {trend: OffsetModel(*columns, trend=trend) for trend in (None, "affine")}
        times = {trend: [] for trend in models}
        for _ in range(repeat):  # interleaved: the machine's load falls on both alike
            for trend, model in models.items():
                start = time.process_time()
                model.to_map(shape, n_jobs=1)
                times[trend].append(time.process_time() - start)
        print(
            f"  {n:>5} stars: no trend {min(times[None]):.3f} s, "
            f"affine trend {min(times['affine']):.3f} s"
        )


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="300 stars only")
    args = parser.parse_args()
    print(f"astro_offsets {astro_offsets.__version__}, numpy {np.__version__}\n")
    table((300,) if args.quick else (300, 1500))
    map_time(2 if args.quick else 5)


if __name__ == "__main__":
    main()
