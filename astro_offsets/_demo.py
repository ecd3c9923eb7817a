"""The embedded demonstration: a synthetic raw sequence through tables, maps and stacking."""

import os
import time
from collections import Counter

import numpy as np

from ._utils.naming import png_path
from .datasets import CameraMotion, render_stars, star_field, write_dng
from .field import OffsetModel, write_maps
from .frames import CFA_CHANNEL, bayer_colors
from .maps import OffsetMap
from .stack import stack_frames
from .stars import make_tables

__all__ = ["run_demo"]

# A crop of an APS-C sensor, five frames of 30 s: enough to show every step
# in well under a minute on two cores.
DEMO_SHAPE = (1600, 2400)
DEMO_FRAMES = 5
DEMO_STARS = 900
DEMO_SEED = 20230302
_SIGMA = 1.3  # PSF sigma in raw pixels (FWHM 3.1 px)
_SKY = (180.0, 260.0, 230.0)  # sky per colour filter (R, G, B), after the black level
_BLACK = 512
_CFA = "RGGB"  # the colour filters of the demo's camera
_HOT_PIXELS = 300
_READ_NOISE = 6.0
# Stars kept in the tables: the maps interpolate the offsets exactly, so
# fewer, well-measured stars give a better map than all of them.
_MIN_SNR = 30.0


def _motions(shape):
    """Return the reference and four frames moved by drift and slow field rotation.

    The rotation is what a slightly misaligned equatorial mount gives: a few
    hundredths of a degree per frame.
    """
    ny, nx = shape
    pole = (-0.8 * nx, 2.6 * ny)  # the celestial pole, far outside the frame
    return [
        CameraMotion(
            shape, drift=(9.4 * k, -5.7 * k), rotation_deg=0.02 * k, pole=pole, barrel=2.5e-9
        )
        for k in range(DEMO_FRAMES)
    ]


def _colours(rng, n):
    """Relative (R, G, B) brightness of stars, from reddish to bluish."""
    warmth = rng.uniform(-1, 1, n)
    return np.stack([1 + 0.45 * warmth, np.ones(n), 1 - 0.45 * warmth], axis=1)


def synthesize_sequence(folder, rng):
    """Write the demo's raw frames as DNG files; return their paths and true motions."""
    os.makedirs(folder, exist_ok=True)
    ny, nx = DEMO_SHAPE
    x, y, flux = star_field(rng, DEMO_STARS, DEMO_SHAPE, margin=80, faintest=800.0)
    colours = _colours(rng, DEMO_STARS)
    # Hot pixels belong to the sensor: the same ones in every frame.
    hot = (rng.integers(0, ny, _HOT_PIXELS), rng.integers(0, nx, _HOT_PIXELS))
    hot_level = rng.uniform(2000, 12000, _HOT_PIXELS)
    filters = CFA_CHANNEL[bayer_colors(DEMO_SHAPE, _CFA)]  # 0 red, 1 green, 2 blue
    frames, motions = [], _motions(DEMO_SHAPE)
    for k, motion in enumerate(motions):
        fx, fy = motion.to_frame(x, y)
        mosaic = np.empty(DEMO_SHAPE)
        for c in range(3):
            plane = _SKY[c] + render_stars(DEMO_SHAPE, fx, fy, flux * colours[:, c], _SIGMA)
            mosaic[filters == c] = plane[filters == c]
        mosaic += rng.standard_normal(DEMO_SHAPE) * np.sqrt(mosaic + _READ_NOISE**2)
        mosaic[hot] = hot_level
        path = os.path.join(folder, f"DEMO{k:04d}.dng")
        raw = np.clip(np.round(mosaic) + _BLACK, 0, 2**14 - 1).astype(np.uint16)
        write_dng(
            path,
            raw,
            cfa=_CFA,
            black_level=_BLACK,
            exptime=30.0,
            iso=3200,
            model="astro_offsets demo",
        )
        frames.append(path)
    return frames, motions


def _errors(dx, dy, motion, gx, gy):
    """RMS and largest length (px) of the error against the true offsets at grid points."""
    true_x, true_y = motion.offset(gx, gy)
    error = np.hypot(dx - true_x, dy - true_y)
    return float(np.sqrt(np.mean(error**2))), float(error.max())


def _accuracy(maps, tables, motions, stride=8):
    """Return the RMS and largest errors (px) of the maps and of the quadrant fields."""
    ny, nx = DEMO_SHAPE
    gy, gx = np.mgrid[0:ny:stride, 0:nx:stride].astype(np.float64)
    found = {"maps": [], "quadrant": []}
    for path, table, motion in zip(maps, tables, motions, strict=True):
        omap = OffsetMap.read(path)
        sampled = (omap.x_offset[::stride, ::stride], omap.y_offset[::stride, ::stride])
        found["maps"].append(_errors(*sampled, motion, gx, gy))
        found["quadrant"].append(_errors(*OffsetModel.read(table)(gx, gy), motion, gx, gy))
    return {
        name: (float(np.sqrt(np.mean([e[0] ** 2 for e in errors]))), max(e[1] for e in errors))
        for name, errors in found.items()
    }


def run_demo(outdir, *, n_jobs=-1, echo=print):
    """Run the whole chain on a synthetic raw sequence with a known truth, and report.

    Five raw frames (DNG files that rawpy reads: a Bayer RGGB mosaic of 900
    coloured stars with a Gaussian PSF and a power-law brightness
    distribution, sky, photon and read noise, hot pixels) are written with a
    known motion (drift, field rotation about a distant pole, seen through a
    barrel-distorting lens); then star tables, offset maps (``method="auto"``,
    with a plot of the last) and a Bayer drizzle stack are made from them, as
    the command line would, and the maps, and the quadrant fields of the same
    tables, are compared with the true motion.

    Parameters
    ----------
    outdir : str or path-like
        Directory for everything (created if missing): ``light/`` with the
        frames, their tables and maps, and ``stack.fits`` (its weights in
        ``stack.weights.fits``) and ``stack.png``.
        Files of an earlier demo there are replaced.
    n_jobs : int, optional
        Workers for the maps, joblib's meaning. The default is -1, all cores.
    echo : callable, optional
        Receives each line of the report. The default is `print`.

    Returns
    -------
    dict
        ``frames``, ``tables``, ``maps`` (paths), ``stack`` (path), ``rms`` and
        ``max_error`` (px, the maps against the true offsets), ``quadrant_rms``
        and ``quadrant_max_error`` (the same for the quadrant field),
        ``seconds`` (per step) and ``matched`` (stars kept in each table).
    """
    start = time.perf_counter()
    outdir = os.fspath(outdir)
    light = os.path.join(outdir, "light")
    rng = np.random.default_rng(DEMO_SEED)
    ny, nx = DEMO_SHAPE
    seconds = {}

    t = time.perf_counter()
    frames, motions = synthesize_sequence(light, rng)
    seconds["frames"] = time.perf_counter() - t
    last = motions[-1]
    echo(
        f"frames: {len(frames)} raw DNG frames of {nx} x {ny} in {light}: Bayer RGGB, "
        f"{DEMO_STARS} stars, sky, noise, {_HOT_PIXELS} hot pixels; drift up to "
        f"{np.hypot(*last.drift):.0f} px, field rotation up to "
        f"{np.rad2deg(last.rotation):.2f} deg, barrel distortion ({seconds['frames']:.1f} s)"
    )

    t = time.perf_counter()
    results = make_tables(frames, frames[0], min_snr=_MIN_SNR, overwrite=True)
    seconds["tables"] = time.perf_counter() - t
    failed = [r.message for r in results if r.status == "failed"]
    if failed:
        raise RuntimeError("; ".join(failed))
    matched = [r.kept for r in results if r.status == "written"]
    per_frame = seconds["tables"] / len(frames)
    echo(
        f"tables: stars found and matched to the reference in {len(matched)} frames, "
        f"{min(matched)} to {max(matched)} stars with SNR >= {_MIN_SNR:g} kept in each "
        f"({per_frame:.2f} s per frame)"
    )

    t = time.perf_counter()
    tables = [r.output for r in results if r.status == "written"]
    # Every map, and the last one's plot: a picture of what the maps are.
    options = {"n_jobs": n_jobs, "overwrite": True, "method": "auto"}
    maps = write_maps(tables[:-1], DEMO_SHAPE, **options)
    maps += write_maps(tables[-1:], DEMO_SHAPE, plot=True, **options)
    seconds["maps"] = time.perf_counter() - t
    failed = [m.message for m in maps if m.status == "failed"]
    if failed:
        raise RuntimeError("; ".join(failed))
    accuracy = _accuracy([m.output for m in maps], tables, motions[1:])
    (rms, worst), (quadrant_rms, quadrant_worst) = accuracy["maps"], accuracy["quadrant"]
    chosen = Counter(m.field.split(" (auto")[0] for m in maps)
    plot = png_path(maps[-1].output)
    echo(
        f"maps: {len(maps)} offset maps, the field chosen by cross-validation ("
        + ", ".join(f"{field} x{n}" for field, n in sorted(chosen.items()))
        + f"); against the true motion: RMS {rms:.3f} px, max {worst:.2f} px (the exact "
        f"quadrant field: RMS {quadrant_rms:.3f} px, max {quadrant_worst:.2f} px); plot of "
        f"the last in {plot} ({seconds['maps'] / len(maps):.2f} s per frame)"
    )

    t = time.perf_counter()
    stack, stacked = stack_frames(frames, pixfrac=0.8)
    out = os.path.join(outdir, "stack.fits")
    stack.write(out, overwrite=True)
    stack.write_preview(os.path.join(outdir, "stack.png"), overwrite=True)
    seconds["stack"] = time.perf_counter() - t
    echo(
        f"stack: {sum(r.status == 'stacked' for r in stacked)} frames by Bayer drizzle "
        f"(pixfrac 0.8) into {out} (its weights in {stack.weights_file(out)}) and "
        f"{os.path.join(outdir, 'stack.png')} "
        f"({seconds['stack'] / len(frames):.2f} s per frame)"
    )
    total = time.perf_counter() - start
    echo(f"done in {total:.1f} s: {total / len(frames):.1f} s per frame for the whole chain")
    return {
        "frames": frames,
        "tables": tables,
        "maps": [m.output for m in maps],
        "stack": out,
        "rms": rms,
        "max_error": worst,
        "quadrant_rms": quadrant_rms,
        "quadrant_max_error": quadrant_worst,
        "seconds": seconds,
        "matched": matched,
    }
