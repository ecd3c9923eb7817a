"""Benchmark ``OffsetMap.to_sip`` on the maps of the benchmark sequence: degree, error, time.

The sequence is ``bench_pipeline.py``'s (8 frames of 4000 x 2700 pixels, 10.8 Mpix: a
drift, a field rotation about a pole outside the frame, a wide-angle lens with barrel
and mustache distortion), with its star tables drawn from the truth rather than measured
in rendered frames: each star that lies in both the frame and the reference, at its
position in the frame, with its true offset plus 0.05 px of Gaussian centroid noise
per axis (about what ``tables`` measures on those frames). The maps are made as
``astro-offsets maps --method auto`` makes them (auto's choice made on the first table
and re-checked on each other, `SequenceChoice`), or with ``--method``.

For each map (frames 1 to 7; frame 0 is the reference) it prints the field, the time
of ``to_map`` and of ``to_sip`` (default ``max_error=0.01`` px), the degree chosen, the
error ``to_sip`` recorded (``sip_error``), and the largest error over every pixel
measured again here, independently: ``x + A(u, v)`` and ``y + B(u, v)`` by
`numpy.polynomial.polynomial.polyval2d` of the SIP coefficients, against ``pixmap()``,
a band of rows at a time. The two must agree; ``recorded >= measured`` is the contract.

Run::

    python benchmarks/bench_sip.py              # 7 maps of 10.8 Mpix, about a minute
    python benchmarks/bench_sip.py --quick      # 1000 x 675, seconds
    python benchmarks/bench_sip.py --method quadrant   # the interpolating field
"""

import argparse
import os
import platform
import sys
import time
import warnings

import numpy as np
from astropy.table import Table

import astro_offsets
from astro_offsets import OffsetModel, SequenceChoice
from astro_offsets.datasets import star_field

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_pipeline import (  # beside this script
    BASE_SHAPE,
    QUICK_SHAPE,
    STARS_PER_MPIX,
    motions,
    parse_size,
)

CENTROID_NOISE = 0.05  # px, per axis
BAND_ROWS = 256


def tables(shape, n_frames, seed):
    """Return each frame's star table (frame positions, offsets with noise): frames 1 on."""
    ny, nx = shape
    rng = np.random.default_rng(seed)
    x, y, _ = star_field(rng, round(STARS_PER_MPIX * nx * ny / 1e6), shape)
    inside = (x >= 0) & (x <= nx - 1) & (y >= 0) & (y <= ny - 1)
    x, y = x[inside], y[inside]
    out = []
    for motion in motions(shape, n_frames)[1:]:
        fx, fy = motion.to_frame(x, y)
        keep = (fx >= 0) & (fx <= nx - 1) & (fy >= 0) & (fy <= ny - 1)
        fx, fy = fx[keep], fy[keep]
        u, v = motion.offset(fx, fy)
        noise = rng.normal(0.0, CENTROID_NOISE, (2, fx.size))
        out.append((fx, fy, u + noise[0], v + noise[1]))
    return out


def measured_error(w, omap):
    """The largest distance over every pixel between the SIP position and the pixmap."""
    ny, nx = omap.shape
    u = np.arange(nx, dtype=np.float64) + 1.0 - w.wcs.crpix[0]
    largest = 0.0
    for start in range(0, ny, BAND_ROWS):
        rows = np.arange(start, min(ny, start + BAND_ROWS), dtype=np.float64)
        uu, vv = np.meshgrid(u, rows + 1.0 - w.wcs.crpix[1])
        # x + A - (x - x_offset) = A + x_offset
        dx = (
            np.polynomial.polynomial.polyval2d(uu, vv, w.sip.a) + omap.x_offset[start:][: len(rows)]
        )
        dy = (
            np.polynomial.polynomial.polyval2d(uu, vv, w.sip.b) + omap.y_offset[start:][: len(rows)]
        )
        largest = max(largest, float(np.nanmax(np.hypot(dx, dy))))
    return largest


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help=f"frames of {QUICK_SHAPE[::-1]}")
    parser.add_argument("--size", type=parse_size, help="WIDTHxHEIGHT (default 4000x2700)")
    parser.add_argument("--frames", type=int, default=8, help="frames, the reference included")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--method", default="auto", help="the field (default: auto)")
    parser.add_argument("--max-error", type=float, default=0.01, help="px (default: 0.01)")
    args = parser.parse_args(argv)
    shape = args.size or (QUICK_SHAPE if args.quick else BASE_SHAPE)

    print(
        f"astro_offsets {astro_offsets.__version__}, numpy {np.__version__}, "
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"load {os.getloadavg()[0]:.2f}"
    )
    print(
        f"{args.frames} frames of {shape[1]} x {shape[0]} ({shape[0] * shape[1] / 1e6:.1f} Mpix), "
        f"method {args.method}, max_error {args.max_error} px, centroid noise "
        f"{CENTROID_NOISE} px"
    )
    print(
        f"{'frame':>5} {'stars':>6}  {'field':<44} {'to_map':>7} {'to_sip':>7} {'degree':>6} "
        f"{'recorded':>9} {'measured':>9}"
    )
    choice = None
    rows = []
    for k, (x, y, u, v) in enumerate(tables(shape, args.frames, args.seed), start=1):
        table = Table({"x": x, "y": y, "x_offset": u, "y_offset": v})
        if choice is not None:
            model = choice.model(table)
        else:
            model = OffsetModel.from_table(table, method=args.method)
            if args.method == "auto":
                choice = SequenceChoice.from_model(model)
        start = time.perf_counter()
        omap = model.to_map(shape)
        made = time.perf_counter()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            w = omap.to_sip(max_error=args.max_error)
        fitted = time.perf_counter()
        measured = measured_error(w, omap)
        rows.append((w.sip.a_order, w.sip_error, measured, fitted - made))
        field = (omap.field_summary or model.method).split(", CV")[0][:44]
        print(
            f"{k:>5} {x.size:>6}  {field:<44} {made - start:>6.2f}s {fitted - made:>6.2f}s "
            f"{w.sip.a_order:>6} {w.sip_error:>9.2e} {measured:>9.2e}"
            + (" (max_error not reached)" if caught else "")
        )
    degrees, recorded, measured, times = zip(*rows, strict=True)
    agree = max(abs(r - m) for r, m in zip(recorded, measured, strict=True))
    print(
        f"degree {min(degrees)}-{max(degrees)}, largest error {max(measured):.2e} px, "
        f"to_sip {np.mean(times):.2f} s per map (median {np.median(times):.2f} s); "
        f"recorded vs measured differ by at most {agree:.1e} px"
    )
    return {"degrees": degrees, "recorded": recorded, "measured": measured, "times": times}


if __name__ == "__main__":
    main()
