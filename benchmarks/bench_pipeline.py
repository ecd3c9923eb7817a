"""Benchmark the whole pipeline against Siril: wall time per stage and stack accuracy.

Makes a synthetic mono FITS sequence with a known truth (`astro_offsets.datasets`):
by default 8 frames of 4000 x 2700 pixels (10.8 Mpix, 16-bit like a camera, EXPTIME
in the headers), about 1900 detectable stars, a drift of 8 px right and 5 px down per
frame, a field rotation of 0.03 degrees per frame about a pole outside the frame, and a
wide-angle lens with barrel and mustache distortion (points drawn up to 32 px nearer
the centre, 2000 px out; the corners 18 px), enough that one homography per frame
cannot follow it.
The first frame, ``light_000.fits``, is the reference of both tools. Then:

1. Siril (``siril-cli``, one process per step, each timed by the wall clock):
   ``convert light``, ``register light`` (global star alignment, a homography per
   frame), ``stack r_light rej 3 3 -norm=addscale`` (average, winsorized sigma
   clipping, additive normalisation with scaling). It runs with a settings file of its
   own (``-i``), so a user's Siril preferences neither change it nor are changed.
2. astro_offsets' three commands with their default options, as subprocesses of the
   installed ``astro-offsets`` script: ``tables light_*.fits --reference
   light_000.fits``, ``maps light_*.offsets_table.fits --image light_000.fits --method
   auto``, ``stack light_*.fits --out stack.fits``; then the same night in one process,
   ``run light_*.fits --reference light_000.fits --out run.fits --tables run_tables``.

It prints the wall time (and the CPU time of the process) per stage, the totals, the
time per frame, and the ratios ours / Siril for registration (tables + maps against
register), stacking, the three commands and ``run``; with several ``--siril``, ``run``
against each of them, wall and CPU. Then the accuracy of each stack: the windowed
centroids (``sep.winpos``) of the isolated, bright, unsaturated stars that lie at least
20 px inside every frame, started at their true reference-frame positions, against the
truth: RMS of the distance over the whole frame and over the corners (the outer 20 %
of the radius to a corner), the mean offset, and the stars' median FWHM (twice the
half-light radius). The reference frame alone gives the measurement's floor and the
input FWHM; the best single homography per frame, fitted to the true motion, shows
what a homography can do at best on this lens.

Timings are noisy on a shared machine: the load average before and after the run is
printed with the figures. ``--blas-threads 1`` runs our commands with one BLAS thread
(``OPENBLAS_NUM_THREADS`` and the like), to see what BLAS threading costs there.

Run (``sep`` measures the stars; Siril is ``apt-get install siril``)::

    pip install -e ".[test]" sep
    python benchmarks/bench_pipeline.py            # 8 frames of 10.8 Mpix, a few minutes
    python benchmarks/bench_pipeline.py --quick    # 8 frames of 1000 x 675, seconds
    python benchmarks/bench_pipeline.py --frames 4 --size 2000x1350 --seed 3 --keep
    python benchmarks/bench_pipeline.py --siril siril-cli --siril ./siril14-cli  # two peers

Without ``siril-cli`` it says how to install it and runs astro_offsets alone.
"""

import argparse
import dataclasses
import glob
import importlib.metadata
import os
import platform
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import joblib
import numpy as np
from astropy.io import fits
from scipy.special import erf

import astro_offsets
from astro_offsets.datasets import CameraMotion, observe, star_field

try:
    import sep
except ImportError:  # pragma: no cover - a clear message instead of a traceback
    sys.exit("bench_pipeline.py measures the stacks with sep: pip install sep")

# The default sequence; other sizes scale lengths with the frame's diagonal (drift,
# pole) and keep the distortion the same fraction of it, and the star density.
BASE_SHAPE = (2700, 4000)  # (ny, nx), 10.8 Mpix
QUICK_SHAPE = (675, 1000)
STARS_PER_MPIX = 203.0  # all stars drawn (frame and margin); about 175 per Mpix detected
DRIFT_PER_FRAME = (8.0, -5.0)  # px
ROTATION_PER_FRAME = 0.03  # degrees
POLE = (-1200.0, 6500.0)  # px, outside the frame
BARREL = 1.0e-8  # r -> r (1 - BARREL r**2 + MUSTACHE r**4), r in px
MUSTACHE = 1.5e-15
PSF_SIGMA = 1.6  # px, as `observe` draws them
SKY = 200.0  # ADU, as `observe` draws it
SATURATION = 65535
EXPTIME = 60.0

# The stars whose positions are measured in the stacks.
BRIGHT = 6000.0  # flux, 4 x the faintest star: total SNR about 50 per frame
ISOLATION = 15.0  # px: no star brighter than 1 % of the flux nearer than this
EDGE = 20.0  # px inside every frame
CORNER = 0.8  # corners: beyond this fraction of the centre-to-corner radius
WINDOW_SIGMA = 1.7  # px, the Gaussian window of sep.winpos (about the PSF's sigma)

SIRIL_STACK = "stack r_light rej 3 3 -norm=addscale -out=stack_siril"
BLAS_THREADS = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")


class StepError(RuntimeError):
    """A command of either tool failed; the message says which and shows its output."""


@dataclasses.dataclass
class Step:
    name: str
    wall: float
    cpu: float
    output: str = ""


@dataclasses.dataclass
class Sequence:
    folder: Path
    frames: list
    reference: str
    shape: tuple
    x: np.ndarray
    y: np.ndarray
    flux: np.ndarray
    motions: list


def parse_size(text):
    match = re.fullmatch(r"(\d+)[xX](\d+)", text)
    if not match:
        raise argparse.ArgumentTypeError(f"expected WIDTHxHEIGHT such as 4000x2700, got {text!r}")
    nx, ny = int(match[1]), int(match[2])
    if min(nx, ny) < 200:
        raise argparse.ArgumentTypeError("frames need at least 200 pixels a side")
    return ny, nx


def motions(shape, n_frames):
    """Return the `CameraMotion` of every frame; frame 0 is the reference (no motion)."""
    scale = np.hypot(*shape) / np.hypot(*BASE_SHAPE)
    return [
        CameraMotion(
            shape,
            drift=(DRIFT_PER_FRAME[0] * scale * k, DRIFT_PER_FRAME[1] * scale * k),
            rotation_deg=ROTATION_PER_FRAME * k,
            pole=(POLE[0] * scale, POLE[1] * scale),
            barrel=BARREL / scale**2,
            mustache=MUSTACHE / scale**4,
        )
        for k in range(n_frames)
    ]


def write_frame(path, shape, x, y, flux, motion, seed, k):
    rng = np.random.default_rng([seed, k])
    image = observe(rng, shape, *motion.to_frame(x, y), flux, sigma=PSF_SIGMA, sky=SKY)
    data = np.clip(np.rint(image), 0, SATURATION).astype(np.uint16)
    header = fits.Header()
    header["EXPTIME"] = (EXPTIME, "exposure time [s]")
    fits.PrimaryHDU(data, header).writeto(path)


def make_sequence(folder, shape, n_frames, seed, jobs):
    ny, nx = shape
    x, y, flux = star_field(
        np.random.default_rng(seed), round(STARS_PER_MPIX * nx * ny / 1e6), shape
    )
    moves = motions(shape, n_frames)
    frames_dir = folder / "frames"
    frames_dir.mkdir()
    names = [f"light_{k:03d}.fits" for k in range(n_frames)]
    joblib.Parallel(n_jobs=jobs or -1)(
        joblib.delayed(write_frame)(frames_dir / name, shape, x, y, flux, moves[k], seed, k)
        for k, name in enumerate(names)
    )
    return Sequence(frames_dir, names, names[0], shape, x, y, flux, moves)


def run(name, command, cwd, failed_if=None, env=None):
    """Run ``command`` in ``cwd``; return its `Step` (wall and CPU time, output)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    try:
        done = subprocess.run(
            command, cwd=cwd, env=env, capture_output=True, text=True, check=False
        )
    except OSError as error:
        raise StepError(f"{name}: could not run {command[0]}: {error}") from None
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    output = done.stdout + done.stderr
    if done.returncode != 0 or (failed_if and failed_if in output):
        shown = " ".join(str(part) for part in command[:6]) + (" ..." if len(command) > 6 else "")
        raise StepError(
            f"{name} failed (exit status {done.returncode}): {shown}\n"
            f"--- its standard error ---\n{done.stderr.strip()[-4000:]}\n"
            f"--- its standard output (end) ---\n{done.stdout.strip()[-4000:]}"
        )
    return Step(name, wall, cpu, output)


# --- Siril ---------------------------------------------------------------------


def siril_version(siril):
    try:
        done = subprocess.run([siril, "--version"], capture_output=True, text=True, check=False)
    except OSError:
        return "?"
    return done.stdout.strip() or done.stderr.strip() or "?"


def run_siril(siril, sequence, jobs, name="siril"):
    """Convert, register and stack with Siril in ``name``; return the steps, stack and notes."""
    root = sequence.folder.parent / name
    inputs, seq = root / "in", root / "seq"
    inputs.mkdir(parents=True)
    seq.mkdir()
    for name in sequence.frames:
        (inputs / name).symlink_to(sequence.folder / name)
    # Siril's own settings, so that a user's preferences neither change the run nor are
    # changed by it; Siril keeps its defaults for everything not set here.
    config = root / "siril.config"
    version = re.search(r"(\d+)\.(\d+)", siril_version(siril))
    modern = version is not None and (int(version[1]), int(version[2])) >= (1, 2)
    # Siril 1.0 reads a libconfig file; 1.2 and later a key file, in which the
    # scripts set the extension themselves (setext).
    config.write_text("" if modern else 'misc-settings :\n{\n  extension = ".fit";\n};\n')
    notes = []

    def script(name, lines, cwd):
        path = root / f"{name}.ssf"
        head = ["requires 1.0.0"] + (["setext fit"] if modern else [])
        head += [f"setcpu {jobs}"] if jobs and jobs > 0 else []
        path.write_text("\n".join([*head, *lines]) + "\n")
        command = [siril, "-i", str(config), "-d", str(cwd), "-s", str(path)]
        step = run(f"siril {name}", command, cwd, "Script execution failed")
        (root / f"{name}.log").write_text(step.output)
        return step

    # convert links the FITS frames (a symbolic link each) as light_00001.fit, ... into
    # seq/; the input names must not share its prefix there, hence the two folders.
    steps = [script("convert", ["convert light -out=../seq"], inputs)]
    converted = sorted(seq.glob("light_*.fit"))
    sources = [Path(os.path.realpath(p)).name for p in converted]
    if sorted(sources) != sorted(sequence.frames):
        raise StepError(f"siril convert made {len(converted)} images from {sources}")
    position = sources.index(sequence.reference) + 1  # Siril counts images from 1
    lines = [] if position == 1 else [f"setref light {position}"]
    steps.append(script("register", [*lines, "register light"], seq))
    registered = re.search(r"Total: (\d+) failed, (\d+) registered", steps[-1].output)
    if registered and int(registered[1]):
        notes.append(f"register: {registered[1]} frames failed")
    steps.append(script("stack", [SIRIL_STACK], seq))
    notes += siril_reference(seq, converted, sources, sequence)
    return steps, seq / "stack_siril.fit", notes


def siril_reference(seq, converted, sources, sequence):
    """Say which frame Siril registered against, and which its sequence names afterwards.

    The frame registered against is copied unchanged into r_light_; the sequence file's
    reference, which stacking normalises to, is read from light_.seq.
    """
    notes = []
    unchanged = []
    for path, source in zip(converted, sources, strict=True):
        registered = seq / f"r_{path.name}"
        if not registered.exists():
            continue
        before, after = fits.getdata(path), fits.getdata(registered)
        scale = 1.0 if after.dtype.kind in "ui" else 1.0 / SATURATION  # float: 0 to 1
        if np.allclose(after, before * scale, rtol=0, atol=1e-6 + scale * 1e-3):
            unchanged.append(f"{path.name} ({source})")
        elif np.allclose(after[::-1], before * scale, rtol=0, atol=1e-6 + scale * 1e-3):
            unchanged.append(f"{path.name} ({source}), upside down")
    notes.append(
        "registered against: "
        + (", ".join(unchanged) or "no frame copied unchanged")
        + f"; default: the sequence's first image ({converted[0].name} -> {sources[0]})"
    )
    if not any(sequence.reference in text for text in unchanged):
        raise StepError(f"Siril did not register against {sequence.reference}: {unchanged}")
    text = (seq / "light_.seq").read_text()
    match = re.search(r"^S '\S+' \d+ \d+ \d+ \d+ (-?\d+)", text, re.M)
    # Registration data per image: shift x, y, FWHM, weighted FWHM, roundness, quality.
    fwhm = [float(m[1]) for m in re.finditer(r"^R0 \S+ \S+ (\S+)", text, re.M)]
    if match and 0 <= int(match[1]) < len(sources):
        index = int(match[1])
        sharpest = (
            f", the lowest FWHM of the sequence ({fwhm[index]:.2f} px)"
            if len(fwhm) == len(sources) and index == int(np.argmin(fwhm))
            else ""
        )
        notes.append(
            f"after register, light_.seq names image {index + 1} ({converted[index].name} -> "
            f"{sources[index]}) as reference{sharpest}; stack normalises to it"
        )
    return notes


# --- astro_offsets ---------------------------------------------------------------


def run_ours(sequence, jobs, blas_threads):
    exe = Path(sys.executable).with_name("astro-offsets")
    if not exe.exists():
        raise StepError(f"no astro-offsets script beside {sys.executable}: pip install -e .")
    folder = sequence.folder
    env = None
    if blas_threads:
        env = dict(os.environ)
        env.update({name: str(blas_threads) for name in BLAS_THREADS})

    def matching(pattern):  # what the shell's pattern would give
        return sorted(os.path.basename(p) for p in glob.glob(str(folder / pattern)))

    tables = [exe, "tables", *matching("light_*.fits"), "--reference", sequence.reference]
    steps = [run("tables", tables, folder, env=env)]
    maps = [exe, "maps", *matching("light_*.offsets_table.fits")]
    maps += ["--image", sequence.reference, "--method", "auto"]
    maps += ["--jobs", str(jobs)] if jobs else []
    steps.append(run("maps", maps, folder, env=env))
    stack = [exe, "stack", *matching("light_*.fits"), "--out", "stack.fits"]
    steps.append(run("stack", stack, folder, env=env))
    # The same night in one run: its tables apart, the maps in memory.
    (folder / "run_tables").mkdir()
    whole = [exe, "run", *matching("light_*.fits"), "--reference", sequence.reference]
    whole += ["--out", "run.fits", "--tables", "run_tables"]
    whole += ["--jobs", str(jobs)] if jobs else []
    steps.append(run("run", whole, folder, env=env))
    return steps, folder / "stack.fits", folder / "run.fits"


# --- accuracy ----------------------------------------------------------------------


def test_stars(sequence):
    """Return the mask of the stars measured: isolated, bright, unsaturated, inside."""
    x, y, flux = sequence.x, sequence.y, sequence.flux
    ny, nx = sequence.shape
    keep = flux >= BRIGHT
    # The peak pixel of a star centred on a pixel, plus the sky, stays below saturation.
    peak = erf(0.5 / (np.sqrt(2) * PSF_SIGMA)) ** 2
    keep &= SKY + flux * peak < 0.9 * SATURATION
    for motion in sequence.motions:
        fx, fy = motion.to_frame(x, y)
        keep &= (fx >= EDGE) & (fx <= nx - 1 - EDGE) & (fy >= EDGE) & (fy <= ny - 1 - EDGE)
    for i in np.flatnonzero(keep):
        near = np.hypot(x - x[i], y - y[i]) < ISOLATION
        near[i] = False
        if np.any(flux[near] > 0.01 * flux[i]):
            keep[i] = False
    return keep


def corner_mask(shape, x, y):
    ny, nx = shape
    cx, cy = (nx - 1) / 2, (ny - 1) / 2
    return np.hypot(x - cx, y - cy) > CORNER * np.hypot(cx, cy)


def measure(image, x, y):
    """Return windowed centroids and FWHM (2 x half-light radius) of stars near ``x, y``."""
    data = np.ascontiguousarray(np.nan_to_num(image), dtype=np.float64)
    data -= sep.Background(data).back()
    xw, yw, flag = sep.winpos(data, x, y, WINDOW_SIGMA)
    radius, rflag = sep.flux_radius(data, xw, yw, np.full(len(x), 6 * WINDOW_SIGMA), 0.5)
    good = (flag == 0) & (rflag == 0) & np.isfinite(xw) & np.isfinite(yw)
    return xw, yw, 2 * radius, good


def orientation(image, x, y):
    """Return which flip of ``image`` puts the stars at ``x, y`` (the most flux there)."""
    data = np.nan_to_num(image.astype(np.float64))
    data -= np.median(data)
    ny, nx = data.shape
    ix, iy = np.rint(x).astype(int), np.rint(y).astype(int)
    flips = {
        "as the input (FITS row 1 first)": (iy, ix),
        "upside down (rows reversed)": (ny - 1 - iy, ix),
        "mirrored (columns reversed)": (iy, nx - 1 - ix),
        "rotated by 180 degrees": (ny - 1 - iy, nx - 1 - ix),
    }
    flux = {name: data[rows, cols].sum() for name, (rows, cols) in flips.items()}
    return max(flux, key=flux.get)


def unflip(image, how):
    if how.startswith("upside"):
        return image[::-1]
    if how.startswith("mirrored"):
        return image[:, ::-1]
    if how.startswith("rotated"):
        return image[::-1, ::-1]
    return image


def accuracy(image, sequence, stars):
    x, y = sequence.x[stars], sequence.y[stars]
    xw, yw, fwhm, good = measure(image, x, y)
    dx, dy = xw - x, yw - y
    good &= np.hypot(dx, dy) < 5  # a centroid that ran off to another star
    corner = corner_mask(sequence.shape, x, y) & good
    distance2 = dx * dx + dy * dy
    return {
        "n": int(good.sum()),
        "rms": float(np.sqrt(distance2[good].mean())),
        "n_corner": int(corner.sum()),
        "rms_corner": float(np.sqrt(distance2[corner].mean())) if corner.any() else np.nan,
        "max_corner": float(np.sqrt(distance2[corner].max())) if corner.any() else np.nan,
        "mean": (float(dx[good].mean()), float(dy[good].mean())),
        "fwhm": float(np.median(fwhm[good])),
        "fwhm_corner": float(np.median(fwhm[corner])) if corner.any() else np.nan,
    }


def homography_floor(sequence, stars):
    """The stack error left by the best single homography per frame (least squares).

    Each frame's true motion, sampled at the measured stars' positions, is fitted by
    one homography from the frame to the reference; a mean stack puts each star at the
    mean of where the frames' homographies send it.
    """
    x, y = sequence.x[stars], sequence.y[stars]
    scale = max(sequence.shape)
    errors = []
    for motion in sequence.motions:
        fx, fy = motion.to_frame(x, y)
        u, v, ru, rv = fx / scale, fy / scale, x / scale, y / scale
        one, zero = np.ones_like(u), np.zeros_like(u)
        rows = np.concatenate(
            [
                np.column_stack([u, v, one, zero, zero, zero, -ru * u, -ru * v, -ru]),
                np.column_stack([zero, zero, zero, u, v, one, -rv * u, -rv * v, -rv]),
            ]
        )
        h = np.linalg.svd(rows)[2][-1].reshape(3, 3)
        w = h[2, 0] * u + h[2, 1] * v + h[2, 2]
        hx = (h[0, 0] * u + h[0, 1] * v + h[0, 2]) / w * scale
        hy = (h[1, 0] * u + h[1, 1] * v + h[1, 2]) / w * scale
        errors.append((hx - x, hy - y))
    dx, dy = np.mean(errors, axis=0)
    distance2 = dx * dx + dy * dy
    corner = corner_mask(sequence.shape, x, y)
    return float(np.sqrt(distance2.mean())), float(np.sqrt(distance2[corner].mean()))


# --- report ----------------------------------------------------------------------


def machine_line(sirils):
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            model = next(
                (
                    line.split(":", 1)[1].strip()
                    for line in cpuinfo
                    if line.startswith("model name")
                ),
                platform.processor(),
            )
    except OSError:
        model = platform.processor()
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    versions = ", ".join(
        f"{name} {importlib.metadata.version(name)}"
        for name in ("numpy", "scipy", "astropy", "photutils", "drizzle", "joblib", "sep")
    )
    lines = [
        f"machine: {model}, {os.cpu_count()} cores ({usable} usable), "
        f"Python {platform.python_version()}",
        f"astro_offsets {astro_offsets.__version__}; {versions}",
        "Siril: " + (", ".join(map(siril_version, sirils)) or "not installed"),
    ]
    blas = {k: os.environ[k] for k in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE") if k in os.environ}
    if blas:
        lines.append(f"environment: {blas} (slows a current numpy)")
    return "\n".join(lines)


def load():
    return "load average {:.2f} {:.2f} {:.2f}".format(*os.getloadavg())


def print_times(siril_steps, our_steps, n_frames):
    print(f"\nwall time (CPU time of the process), {n_frames} frames")
    print(f"{'stage':<30}{'Siril':>20}{'astro_offsets':>22}{'ours / Siril':>14}")

    def cell(step):
        return f"{step.wall:8.2f} s ({step.cpu:6.1f})" if step else f"{'-':>19}"

    siril = {s.name.removeprefix("siril "): s for s in siril_steps or []}
    ours = {s.name: s for s in our_steps or []}
    rows = [
        ("convert | -", siril.get("convert"), None),
        ("register | tables", siril.get("register"), ours.get("tables")),
        ("  - | maps", None, ours.get("maps")),
        ("stack | stack", siril.get("stack"), ours.get("stack")),
    ]
    for label, a, b in rows:
        print(f"{label:<30}{cell(a):>20}{cell(b):>22}")

    def total(steps, names):
        chosen = [steps[n] for n in names if n in steps]
        if len(chosen) != len(names):
            return None
        return Step("+".join(names), sum(s.wall for s in chosen), sum(s.cpu for s in chosen))

    siril_register = total(siril, ["register"])
    our_register = total(ours, ["tables", "maps"])
    siril_stack, our_stack = total(siril, ["stack"]), total(ours, ["stack"])
    siril_all = total(siril, ["convert", "register", "stack"])
    our_all = total(ours, ["tables", "maps", "stack"])
    our_run = ours.get("run")
    for label, a, b in (
        ("registration (tables + maps)", siril_register, our_register),
        ("stacking", siril_stack, our_stack),
        ("total", siril_all, our_all),
        ("run (all in one process)", siril_all, our_run),
    ):
        ratio = f"{b.wall / a.wall:13.2f}x" if a and b and a.wall > 0 else f"{'-':>14}"
        print(f"{label:<30}{cell(a):>20}{cell(b):>22}{ratio}")
    per = [f"{s.wall / n_frames:8.2f} s" if s else f"{'-':>10}" for s in (siril_all, our_run)]
    print(f"{'run per frame':<30}{per[0]:>20}{per[1]:>22}")


def print_peers(peers, our_steps):
    """Print ``run`` against every Siril of the run: wall and CPU time, and their ratios."""
    ours = {s.name: s for s in our_steps or []}
    if "run" not in ours or len(peers) < 2:
        return
    whole = ours["run"]
    print("\nastro-offsets run against each Siril (convert + register + stack), same run")
    for version, steps in peers:
        if not steps:
            print(f"  {version:<24} failed")
            continue
        wall, cpu = sum(s.wall for s in steps), sum(s.cpu for s in steps)
        print(
            f"  {version:<24}{wall:8.2f} s ({cpu:6.1f} CPU s)   run {whole.wall:8.2f} s "
            f"({whole.cpu:6.1f} CPU s): {whole.wall / wall:5.2f}x wall, {whole.cpu / cpu:5.2f}x CPU"
        )


def print_accuracy(rows, sequence, stars, floor):
    n_corner = int(corner_mask(sequence.shape, sequence.x[stars], sequence.y[stars]).sum())
    print(
        f"\naccuracy: {int(stars.sum())} isolated, bright, unsaturated stars at least "
        f"{EDGE:.0f} px inside every frame ({n_corner} in the corners, beyond "
        f"{CORNER:.0%} of the radius to a corner), windowed centroids against the truth"
    )
    print(
        f"{'':<34}{'stars':>6}{'RMS':>9}{'corners':>9}{'max':>8}"
        f"{'mean dx, dy':>18}{'FWHM':>8}{'corners':>9}"
    )
    for label, figures in rows:
        if isinstance(figures, str):
            print(f"{label:<34}{figures}")
            continue
        mx, my = figures["mean"]
        print(
            f"{label:<34}{figures['n']:>6d}{figures['rms']:>7.3f}px{figures['rms_corner']:>7.3f}px"
            f"{figures['max_corner']:>6.2f}px{mx:>+9.3f},{my:>+7.3f}px"
            f"{figures['fwhm']:>6.2f}px{figures['fwhm_corner']:>7.2f}px"
        )
    print(
        f"{'best homography per frame':<34}{'':>6}{floor[0]:>7.3f}px{floor[1]:>7.3f}px"
        "   (the truth fitted, no noise: a homography's limit on this lens)"
    )


def print_outputs(our_steps):
    for step in our_steps or []:
        lines = [line for line in step.output.splitlines() if line.strip()]
        if step.name == "tables":
            shown = [line for line in lines if "(reference)" in line] + lines[-1:]
        elif step.name == "maps":
            shown = lines
        else:  # the summary line, on standard output before the notes on standard error
            shown = [line for line in lines if line.startswith(f"{step.name}: ")][-1:]
        for line in shown:
            print(f"  {line}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=8, help="frames in the sequence")
    size = parser.add_mutually_exclusive_group()
    size.add_argument(
        "--size",
        type=parse_size,
        default=BASE_SHAPE,
        metavar="WxH",
        help="frame size in pixels (default: 4000x2700)",
    )
    size.add_argument(
        "--quick",
        action="store_const",
        dest="size",
        const=QUICK_SHAPE,
        help="frames of 1000x675 (a sixteenth of the pixels) while developing",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the sky and the noise")
    parser.add_argument(
        "--siril",
        action="append",
        help="a siril-cli to run, once per Siril to compare (default: siril-cli on the "
        "PATH); a wrapper that runs another Siril, such as ../shared/tools/siril14 DIR, "
        "with DIR above the temporary folder",
    )
    parser.add_argument("--keep", action="store_true", help="keep the scratch folder")
    parser.add_argument(
        "--jobs",
        type=int,
        default=None,
        help="workers: maps --jobs, Siril's setcpu and the frames' making "
        "(default: each tool's own, all cores)",
    )
    parser.add_argument(
        "--blas-threads",
        type=int,
        default=None,
        metavar="N",
        help="set OPENBLAS_NUM_THREADS (and OMP_, MKL_) to N for astro_offsets' commands "
        "(default: unset, as a user runs them)",
    )
    args = parser.parse_args()
    if args.frames < 2:
        parser.error("--frames: at least 2")
    if args.jobs is not None and args.jobs == 0:
        parser.error("--jobs: 0 jobs; use 1 for serial, -1 for all cores")

    sirils = args.siril or [shutil.which("siril-cli")]
    sirils = [siril for siril in sirils if siril]
    print(machine_line(sirils))
    print(f"before: {load()} (the machine is shared: timings are noisy)")
    if args.blas_threads:
        blas = ", ".join(f"{name}={args.blas_threads}" for name in BLAS_THREADS)
        print(f"astro_offsets' commands run with {blas}")
    if not sirils:
        print("siril-cli not found: install Siril (apt-get install siril); running ours alone")

    folder = Path(tempfile.mkdtemp(prefix="bench_pipeline_"))
    failures = []
    try:
        ny, nx = args.size
        start = time.perf_counter()
        sequence = make_sequence(folder, args.size, args.frames, args.seed, args.jobs)
        stars = test_stars(sequence)
        print(
            f"\nsequence: {args.frames} frames of {nx} x {ny} ({nx * ny / 1e6:.1f} Mpix, uint16, "
            f"EXPTIME {EXPTIME:.0f} s), {len(sequence.x)} stars drawn, seed {args.seed}; made "
            f"in {time.perf_counter() - start:.1f} s"
        )
        last = sequence.motions[-1]
        print(
            f"motion of the last frame: drift ({last.drift[0]:.1f}, {last.drift[1]:.1f}) px, "
            f"rotation {np.rad2deg(last.rotation):.2f} deg about ({last.pole[0]:.0f}, "
            f"{last.pole[1]:.0f}); lens: barrel {last.barrel:.2e}, mustache {last.mustache:.2e}"
        )

        # Every Siril, then ours: (version, steps, stack, notes) each.
        peers = []
        for k, siril in enumerate(sirils):
            version = siril_version(siril)
            try:
                peers.append((version, *run_siril(siril, sequence, args.jobs, f"siril{k}")))
            except StepError as error:
                failures.append(str(error))
                peers.append((version, None, None, []))
        our_steps = our_stack = run_stack = None
        try:
            our_steps, our_stack, run_stack = run_ours(sequence, args.jobs, args.blas_threads)
        except StepError as error:
            failures.append(str(error))

        print_times(peers[0][1] if peers else None, our_steps, args.frames)
        print_peers([(version, steps) for version, steps, _, _ in peers], our_steps)
        print(f"after: {load()}")
        print_outputs(our_steps)

        rows = []
        reference = fits.getdata(sequence.folder / sequence.reference).astype(np.float64)
        rows.append(("reference frame alone (floor)", accuracy(reference, sequence, stars)))
        for version, _, siril_stack, notes in peers:
            label = version.replace("siril", "Siril").strip()
            if siril_stack is None:
                rows.append((label, "failed (see below)"))
                continue
            with fits.open(siril_stack) as hdul:
                header = hdul[0].header
                image = hdul[0].data.astype(np.float64)
            how = orientation(image, sequence.x[stars], sequence.y[stars])
            roworder = header.get("ROWORDER", "none")
            notes.append(f"stack orientation: {how}; ROWORDER keyword: {roworder}")
            notes.append(
                f"stack: BITPIX {header['BITPIX']}, {image.shape[1]} x {image.shape[0]}, sky "
                f"{np.median(image):.4g} (the reference frame's: {np.median(reference):.4g} ADU)"
            )
            rows.append((label, accuracy(unflip(image, how), sequence, stars)))
        if not peers:
            rows.append(("Siril", "not run: no siril-cli"))
        for label, path in (
            ("astro_offsets (tables, maps auto)", our_stack),
            ("astro_offsets run", run_stack),
        ):
            if path is None:
                rows.append((label, "failed (see below)"))
                continue
            image = fits.getdata(path, "SCI").astype(np.float64)
            how = orientation(image, sequence.x[stars], sequence.y[stars])
            if not how.startswith("as the input"):
                failures.append(f"{label}: the stack is {how}")
            rows.append((label, accuracy(image, sequence, stars)))
        print_accuracy(rows, sequence, stars, homography_floor(sequence, stars))
        for version, _, _, notes in peers:
            for note in notes:
                print(f"{version}: {note}")
    finally:
        if args.keep:
            print(f"\nkept {folder}")
        else:
            shutil.rmtree(folder, ignore_errors=True)
    for failure in failures:
        print(f"\nFAILED: {failure}", file=sys.stderr)
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
