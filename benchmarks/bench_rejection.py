"""Benchmark outlier rejection: drizzlepac's two passes against one pass in the output grid.

Writes a mono sequence with a known truth (`astro_offsets.datasets`): by default
10 frames of 2000 x 1350 pixels (``--size 4000x2700`` for the size of issue 21),
each moved by a known `CameraMotion` (a drift of up to 12 px, a turn of up to
0.15 degree, a barrel lens) whose true map is written beside it; the seeing
changes from frame to frame, FWHM 3.4 to 4.5 px; every frame has cosmic rays
(one hit per 3000 px, 30 to 1000 sky sigmas), frame 3 a satellite trail (20
sky sigmas). The same frames without the trail and the cosmic rays (the same
noise) give the truth. Then, on ``--jobs`` cores (2 by default):

(a) ``two-pass``: today's rejection, ``stack_frames(reject=True)`` with the
    default kernel: each frame kept in the scratch and drizzled alone by the
    point kernel (``store_frame``), the medians (``Rejection.combine``), then each
    frame's outliers against the median blotted back to it (``Rejection.mask``,
    per input pixel) and the frame drizzled with them masked (``Stacker.add``).
(b) ``none``: ``stack_frames(reject=False)``.
(c) ``one-pass``: a prototype, here, of rejection in the output grid. Each
    frame, read and normalised as ``stack_frames`` does (``Frames``), is
    drizzled once, with the real kernel, into a single of its own (one
    `Stacker`, its accumulators emptied after each frame), and its (image,
    weight) kept in a scratch memory map. Then, per output pixel, the values of
    the frames that cover it are combined: ``sum(W_i s_i) / sum(W_i)`` over
    the values not rejected, which is what drizzle sums (the stack is the
    weighted mean of the single drizzles). Rejections tried:

    - ``none``: nothing rejected, to show that the sum is drizzle's own;
    - ``winsorized``: Siril's default, winsorized sigma clipping, 3 and 3 sigma
      (sigma from the winsorized values, 1.134 times their deviation);
    - ``kappa-sigma``: sigma clipping about the median, 3 and 3 sigma;
    - ``median``: the pass-2 test of today's rejection moved to the output
      grid: each single against the median of the singles, beyond 5 noise
      sigmas plus 1.6 times the median's local step (then 3 and 0.9 next to
      those), grown by a pixel; the noise the single's own, from its residual
      against the median on the sky (a drizzled single's neighbouring pixels
      are not independent), growing with the light above the frame's zero.

    As today, no value is rejected where fewer than 3 frames cover a pixel.

Printed per scheme: wall and CPU time (this process and its workers), per frame,
and the part that is rejection; the peak of the scratch files (sampled every 20
ms); and what it rejects, measured against the truth stack:

- trail: the stack's mean on the trail's line less its mean 8 px beside it, in
  sky sigmas (as ``tests/test_real_night.py``);
- cosmic rays: of the output pixels that a hit raises by more than 5 sigma in
  the stack without rejection, the fraction still more than 3 sigma above the
  truth, and the hits' flux left (%), away from bright stars and within 6 to 8
  px of one (where the stars' steps hide them from drizzlepac's test);
- star cores: the flux within 2 px of the centres of the brightest isolated
  stars that no outlier touches, against the stack without rejection (median
  and largest change), and the fraction of their core pixels rejected in the
  sharpest and in the softest frame;
- the sky: the fraction of values (pixel of a frame) rejected away from any
  outlier and star, per frame;
- the edges: the same figures where not every frame covers.

Run::

    python benchmarks/bench_rejection.py [--size 2000x1350] [--frames 10] [--jobs 2]
        [--repeat 3]     # runs of each scheme, alternating: medians of the costs
        [--folder DIR]   # keep (and reuse) the sequence there

The default run takes about two and a half minutes on 2 cores; ``--size
4000x2700`` about six (two of them writing the sequence).
"""

import argparse
import contextlib
import functools
import os
import re
import shutil
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import psutil
from astropy.io import fits
from scipy.ndimage import binary_dilation
from scipy.spatial import cKDTree

SKY, READ, EXPTIME = 300.0, 6.0, 60.0
SIGMA = np.sqrt(SKY + READ**2)
FWHM = (3.4, 4.5)
TRAIL_FRAME = 3
CR_AREA = 3000  # pixels per cosmic-ray hit
STARS_PER_MPIX = 400
GRID = 60  # px between the bright stars measured
LEAST = 3  # the fewest frames a rejection tells an outlier by (as _rejection._LEAST)
CORE = 2.0  # px: a star's core
BRIGHT = 8e4  # brighter stars than those of tests/stack/test_rejection.py


def parse_size(text):
    match = re.fullmatch(r"(\d+)[xX](\d+)", text)
    if not match:
        raise argparse.ArgumentTypeError(f"expected WIDTHxHEIGHT such as 4000x2700, got {text!r}")
    nx, ny = int(match[1]), int(match[2])
    if min(nx, ny) < 300:
        raise argparse.ArgumentTypeError("frames need at least 300 pixels a side")
    return ny, nx


# The sequence ------------------------------------------------------------------------------


class Sequence:
    """The frames written, their truth and what is known of them."""

    def __init__(self, folder, shape, n_frames):
        from astro_offsets.datasets import CameraMotion, star_field

        self.folder = folder
        self.shape = shape
        self.n = n_frames
        ny, nx = shape
        rng = np.random.default_rng(21)
        x, y, flux = star_field(rng, round(STARS_PER_MPIX * nx * ny / 1e6), shape, faintest=800.0)
        gy, gx = np.mgrid[40 : ny - 39 : GRID, 40 : nx - 39 : GRID].reshape(2, -1).astype(float)
        gx, gy = gx + rng.uniform(-5, 5, gx.size), gy + rng.uniform(-5, 5, gy.size)
        self.x = np.concatenate([x, gx])
        self.y = np.concatenate([y, gy])
        self.flux = np.concatenate([flux, rng.uniform(2e4, 8e4, gx.size)])
        self.motions = [None] + [
            CameraMotion(
                shape,
                drift=tuple(rng.uniform(-12, 12, 2)),
                rotation_deg=rng.uniform(-0.15, 0.15),
                barrel=5e-8 * (1000 / max(shape)) ** 2,
            )
            for _ in range(1, n_frames)
        ]
        fwhm = np.linspace(*FWHM, n_frames)
        # The reference of middling seeing; the others in random order.
        order = rng.permutation(n_frames)
        self.fwhm = fwhm[order]
        self.sharpest = int(np.argmin(self.fwhm))
        self.softest = int(np.argmax(self.fwhm))
        self.dirty = [os.path.join(folder, "dirty", f"light{k}.fits") for k in range(n_frames)]
        self.clean = [os.path.join(folder, "clean", f"light{k}.fits") for k in range(n_frames)]

    def trail_ends(self):
        ny, nx = self.shape
        return (-5.0, 0.2 * ny), (nx + 5.0, 0.7 * ny)

    def artefacts(self, k):
        """Return the cosmic rays and (frame 3) the trail of frame ``k``, in its counts."""
        from astro_offsets.datasets import cosmic_rays, satellite_trail

        n_hits = round(self.shape[0] * self.shape[1] / CR_AREA)
        rays = cosmic_rays(
            np.random.default_rng([5, k]), self.shape, n_hits, amplitude=(30 * SIGMA, 1000 * SIGMA)
        )
        trail = None
        if k == TRAIL_FRAME:
            trail = satellite_trail(self.shape, *self.trail_ends(), amplitude=20 * SIGMA)
        return rays, trail

    def frame_stars(self, k):
        if k == 0:
            return self.x, self.y
        return self.motions[k].to_frame(self.x, self.y)

    def write(self):
        from astro_offsets import OffsetMap
        from astro_offsets.datasets import render_stars

        for part in ("dirty", "clean"):
            os.makedirs(os.path.join(self.folder, part), exist_ok=True)
        gy, gx = np.indices(self.shape, dtype=float)
        for k in range(self.n):
            sigma = self.fwhm[k] / (2 * np.sqrt(2 * np.log(2)))
            signal = SKY + render_stars(self.shape, *self.frame_stars(k), self.flux, sigma)
            noise = np.random.default_rng([9, k]).standard_normal(self.shape)
            clean = signal + noise * np.sqrt(signal + READ**2)
            rays, trail = self.artefacts(k)
            dirty = clean + rays + (0 if trail is None else trail)
            header = fits.Header({"EXPTIME": EXPTIME})
            for path, data in ((self.clean[k], clean), (self.dirty[k], dirty)):
                fits.PrimaryHDU(data.astype(np.float32), header).writeto(path, overwrite=True)
            if k:
                omap = OffsetMap(*self.motions[k].offset(gx, gy))
                for path in (self.clean[k], self.dirty[k]):
                    omap.write(path.replace(".fits", ".offsets.fits"), overwrite=True)
        with open(os.path.join(self.folder, "complete"), "w") as file:
            file.write(f"{self.shape} {self.n}\n")

    def written(self):
        marker = os.path.join(self.folder, "complete")
        if not os.path.exists(marker):
            return False
        with open(marker) as file:
            return file.read().strip() == f"{self.shape} {self.n}"

    def on_reference(self, k, selected):
        """Reference grid pixels of frame ``k``'s pixels ``selected``."""
        fy, fx = np.nonzero(selected)
        if k:
            rx, ry = self.motions[k].to_reference(fx.astype(float), fy.astype(float))
        else:
            rx, ry = fx, fy
        rx, ry = np.round(rx).astype(int), np.round(ry).astype(int)
        ny, nx = self.shape
        inside = (rx >= 0) & (rx < nx) & (ry >= 0) & (ry < ny)
        footprint = np.zeros(self.shape, bool)
        footprint[ry[inside], rx[inside]] = True
        return footprint


# Measuring time and scratch ------------------------------------------------------------------


def cpu_seconds():
    """CPU time of this process and its children (the stack's workers) so far."""
    me = psutil.Process()
    total = 0.0
    for process in [me, *me.children(recursive=True)]:
        try:
            times = process.cpu_times()
        except psutil.Error:
            continue
        total += times.user + times.system
    return total


class ScratchPeak:
    """The peak of the bytes of the files under a directory, sampled in a thread."""

    def __init__(self, directory, every=0.02):
        self.directory = directory
        self.every = every
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _size(self):
        total = 0
        for root, _, files in os.walk(self.directory):
            for name in files:
                with contextlib.suppress(FileNotFoundError):  # removed meanwhile
                    total += os.stat(os.path.join(root, name)).st_blocks * 512
        return total

    def _sample(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, self._size())
            self._stop.wait(self.every)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._size())


class Stages:
    """Wall time spent in functions of the package, wrapped while a scheme runs."""

    def __init__(self):
        self.seconds = {}
        self._undo = []

    def wrap(self, owner, name, label):
        function = getattr(owner, name)

        @functools.wraps(function)
        def timed(*args, **kwargs):
            start = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                self.seconds[label] = self.seconds.get(label, 0.0) + time.perf_counter() - start

        setattr(owner, name, timed)
        self._undo.append((owner, name, function))

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        for owner, name, function in reversed(self._undo):
            setattr(owner, name, function)


class Result:
    """A scheme's stack, its costs and its rejections (per frame, in the output grid)."""

    def __init__(self, name, image, weight, wall, cpu, scratch):
        self.name = name
        self.image = image
        self.weight = weight
        self.wall = wall
        self.cpu = cpu
        self.scratch = scratch
        self.stages = {}
        self.rejected = None  # callable k -> bool image of the output grid

    def forget(self):
        """Drop the images and rejections (an earlier run's, kept for its times)."""
        self.image = self.weight = self.rejected = self.flags = self.context = None


# (a) and (b): stack_frames --------------------------------------------------------------------


def run_stack_frames(frames, scratch, jobs, reject, masks=None):
    from astro_offsets import stack_frames
    from astro_offsets.stack import _rejection, _stacker

    os.makedirs(scratch, exist_ok=True)
    with Stages() as stages:
        stages.wrap(_rejection, "store_frame", "store_frame (thread)")
        stages.wrap(_rejection.Rejection, "combine", "combine (medians)")
        stages.wrap(_rejection.Rejection, "mask", "mask (blot, compare)")
        stages.wrap(_stacker.Stacker, "add", "Stacker.add")
        cpu0, wall0 = cpu_seconds(), time.perf_counter()
        with ScratchPeak(scratch) as peak:
            stack, results = stack_frames(
                frames, reject=reject, select=False, n_jobs=jobs, scratch=scratch, masks=masks
            )
            image = np.array(stack.images["SCI"])
            weight = np.array(stack.weights["SCI"])
            context = np.array(stack.contexts["SCI"])
        wall, cpu = time.perf_counter() - wall0, cpu_seconds() - cpu0
    bad = [r for r in results if r.status != "stacked"]
    if bad:
        sys.exit(f"stack_frames failed: {bad}")
    name = "two-pass (today)" if reject else "no rejection"
    result = Result(name, image, weight, wall, cpu, peak.peak)
    result.stages = stages.seconds
    result.context = context
    return result


def two_pass_masks(sequence, scratch, jobs, result):
    """Give today's result its masks, per input pixel, from another run (not timed)."""
    folder = os.path.join(scratch, "masks")
    os.makedirs(folder)
    run_stack_frames(sequence.dirty, os.path.join(scratch, "masks-run"), jobs, True, masks=folder)
    masks = [
        fits.getdata(os.path.join(folder, f"light{k}.outliers.fits")) == 1
        for k in range(sequence.n)
    ]
    result.rejected = lambda k: sequence.on_reference(k, masks[k])


# (c): one drizzle per frame, rejection in the output grid ------------------------------------


def drizzle_singles(frames, folder, jobs):
    """Drizzle each frame once, alone; keep its image and weight (memory maps) and its zero.

    Frames are read and normalised as `stack_frames` reads them, the next
    one in a thread while this one is drizzled; each goes into the stack's
    units (per second of the reference's exposure) with the weight that
    `stack_frames` gives it.
    """
    from astro_offsets import Stacker
    from astro_offsets.stack._run import Frames, Item

    reader = Frames(None, True, True, "noise")
    maps = [None] + [f.replace(".fits", ".offsets.fits") for f in frames[1:]]
    items = [Item(k, f, m, f, m) for k, (f, m) in enumerate(zip(frames, maps, strict=True))]
    first = reader.read(items[0])  # the reference: the others are normalised to it
    shape = reader.shape
    n = len(frames)
    singles = np.lib.format.open_memmap(
        os.path.join(folder, "singles.npy"), "w+", np.float32, (n, *shape)
    )
    weights = np.lib.format.open_memmap(
        os.path.join(folder, "weights.npy"), "w+", np.float32, (n, *shape)
    )
    zeros = np.zeros(n)
    reference_exptime = reader.reference[1]
    with (
        Stacker(shape, n_jobs=jobs, scratch=folder, context=False) as stacker,
        ThreadPoolExecutor(1) as pool,
    ):
        pending = pool.submit(lambda: first)
        for k in range(n):
            prepared = pending.result()
            if k + 1 < n:
                pending = pool.submit(reader.read, items[k + 1])
            exptime = prepared.exptime
            factor = exptime / reference_exptime
            data = prepared.data
            data *= np.float32(factor)
            # As Run._weights: per frame, its weight times the reference's exposure.
            wtscale = prepared.weight * reference_exptime
            stacker.add(data, prepared.offset_map, exptime=exptime, frame_weight=wtscale)
            zeros[k] = reader.zeros(prepared.norm)[0] * factor / exptime
            del prepared, data
            stack = stacker.stack()
            image, weight = stack.images["SCI"], stack.weights["SCI"]
            singles[k] = image
            weights[k] = weight
            # Empty the accumulators for the next frame's single.
            image[...] = np.nan
            weight[...] = 0.0
    return singles, weights, zeros


def winsorized(values, low=3.0, high=3.0):
    """Return the values (n, ...) that winsorized sigma clipping rejects (Siril's scheme).

    Per pixel, about the median: sigma is 1.134 times the deviation of the
    values winsorized at 1.5 sigma, until it changes by less than 0.05 %;
    values below ``low`` or above ``high`` sigmas are rejected; again on those
    left, while 3 or more are left.
    """
    return _clip(values, low, high, winsorize=True)


def kappa_sigma(values, low=3.0, high=3.0):
    """Return the values (n, ...) that sigma clipping about the median rejects."""
    return _clip(values, low, high, winsorize=False)


def _deviation(values):
    finite = np.isfinite(values)
    count = finite.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(finite, values, 0).sum(axis=0) / count
        square = np.where(finite, (values - mean) ** 2, 0).sum(axis=0)
        return np.sqrt(square / (count - 1))


def _clip(values, low, high, winsorize):
    """Return the rejections of sigma clipping about the median, per pixel of ``values``.

    Vectorised over the pixels still iterating (numpy): each pass works on
    the pixels whose sigma has not converged, or that lost a value.
    """
    from astro_offsets.stack._outliers import nanmedian

    n = len(values)
    flat = values.reshape(n, -1)
    rejected = np.zeros(flat.shape, bool)
    active = np.flatnonzero(np.isfinite(flat).sum(axis=0) >= LEAST)
    for _ in range(10):
        if not active.size:
            break
        live = np.where(rejected[:, active], np.float32(np.nan), flat[:, active])
        median = np.empty(live.shape[1], np.float32)
        live = np.ascontiguousarray(live)
        nanmedian(live.reshape(n, 1, -1), median.reshape(1, -1))
        sigma = _deviation(live)
        if winsorize:
            todo = np.arange(live.shape[1])
            for _ in range(50):
                part = live[:, todo]
                m = median[todo]
                clipped = np.clip(part, m - 1.5 * sigma[todo], m + 1.5 * sigma[todo])
                new = 1.134 * _deviation(clipped)
                moving = np.abs(new - sigma[todo]) > 5e-4 * sigma[todo]
                sigma[todo] = new
                todo = todo[moving]
                if not todo.size:
                    break
        with np.errstate(invalid="ignore"):
            out = ((median - live) > low * sigma) | ((live - median) > high * sigma)
        changed = out.any(axis=0)
        rejected[:, active[changed]] |= out[:, changed]
        active = active[changed]
        # On those left, while 3 or more are left.
        active = active[(~rejected[:, active] & np.isfinite(flat[:, active])).sum(axis=0) >= LEAST]
    return rejected.reshape(values.shape)


def median_test(singles, weights, zeros, cover, threads):
    """Return a function that writes rows of the pass-2 test's rejections, in the output grid.

    The median of the singles (the package's kernel, 3 values at least),
    then each single against it with the package's own test (`outliers`,
    `grow`), with the single's noise from its residual on the sky.
    """
    from astro_offsets.stack import _rejection
    from astro_offsets.stack._outliers import grow, nanmedian, outliers

    n, ny, nx = singles.shape
    median = np.empty((ny, nx), np.float32)
    rows = 64

    def median_rows(start):
        stop = min(start + rows, ny)
        cube = np.where(weights[:, start:stop] > 0, singles[:, start:stop], np.float32(np.nan))
        nanmedian(np.ascontiguousarray(cube, np.float32), median[start:stop], LEAST)

    start = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(median_rows, range(0, ny, rows)))
    timing = {"median": time.perf_counter() - start}
    start = time.perf_counter()
    flags = np.zeros((n, ny, nx), bool)
    stride = _rejection._STRIDE
    spans = [(r, min(r + 64, ny)) for r in range(0, ny, 64)]
    for k in range(n):
        pixels = np.where(weights[k] > 0, singles[k], np.float32(np.nan))
        residual = pixels[::stride, ::stride] - median[::stride, ::stride]
        coarse = _rejection._smooth(residual)
        sample = median[::stride, ::stride]
        finite = np.isfinite(sample) & np.isfinite(residual)
        sky = float(np.median(sample[finite]))
        variance = float(_rejection._mad_std(residual[finite]) ** 2)
        gain = (sky - zeros[k]) / variance if sky > zeros[k] else np.inf
        found = np.zeros((ny, nx), np.uint8)
        grown = np.zeros((ny, nx), np.uint8)
        arguments = (pixels, median, coarse, _rejection._BLOCK, sky, variance, gain)
        arguments += (*_rejection.SNR[:1], *_rejection.SCALE[:1], _rejection.SNR[1])
        arguments += (_rejection.SCALE[1],)
        with ThreadPoolExecutor(threads) as pool:
            for near in (False, True):
                task = functools.partial(_outliers_rows, outliers, arguments, found, near)
                list(pool.map(task, spans))
            list(pool.map(lambda span, found=found, grown=grown: grow(found, *span, grown), spans))
        flags[k] = grown.view(bool) & (weights[k] > 0) & (cover >= LEAST)
    timing["tests"] = time.perf_counter() - start
    return flags, timing


def _outliers_rows(outliers, arguments, found, near, span):
    outliers(*arguments, *span, found, near)


def combine(singles, weights, flags=None, rule=None, threads=2):
    """Return the weighted mean of the singles over the values kept, and the rejections.

    ``flags`` (n, ny, nx) are given; or ``rule`` finds them per chunk of rows.
    """
    n, ny, nx = singles.shape
    image = np.empty((ny, nx), np.float32)
    weight = np.empty((ny, nx), np.float32)
    out = np.zeros((n, ny, nx), bool) if flags is None else flags
    rows = 32

    def rows_of(start):
        stop = min(start + rows, ny)
        w = np.asarray(weights[:, start:stop])
        s = np.asarray(singles[:, start:stop])
        if rule is not None:
            values = np.where(w > 0, s, np.float32(np.nan))
            out[:, start:stop] = rule(values)
        w = np.where(out[:, start:stop], 0.0, w.astype(np.float64))
        total = w.sum(axis=0)
        with np.errstate(invalid="ignore", divide="ignore"):
            image[start:stop] = np.where(w > 0, w * s, 0.0).sum(axis=0) / total
        image[start:stop][total == 0] = np.nan
        weight[start:stop] = total

    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(rows_of, range(0, ny, rows)))
    return image, weight, out


def one_pass(sequence, folder, jobs):
    """The schemes of (c): the singles drizzled once, then each rejection; their results."""
    os.makedirs(folder)
    threads = max(1, jobs)
    results = []
    with ScratchPeak(folder) as peak:
        cpu0, wall0 = cpu_seconds(), time.perf_counter()
        singles, weights, zeros = drizzle_singles(sequence.dirty, folder, jobs)
        drizzle_wall, drizzle_cpu = time.perf_counter() - wall0, cpu_seconds() - cpu0
        singles_peak = peak.peak
        cover = (np.asarray(weights) > 0).sum(axis=0)
        variants = (
            ("none", None),
            ("winsorized", winsorized),
            ("kappa-sigma", kappa_sigma),
            ("median", "median"),
        )
        for name, rule in variants:
            cpu0, wall0 = cpu_seconds(), time.perf_counter()
            timing = {}
            if rule == "median":
                flags, timing = median_test(singles, weights, zeros, cover, threads)
                image, weight, flags = combine(singles, weights, flags=flags, threads=threads)
            else:
                image, weight, flags = combine(singles, weights, rule=rule, threads=threads)
            wall, cpu = time.perf_counter() - wall0, cpu_seconds() - cpu0
            timing = {"drizzle singles": drizzle_wall, **timing, "combine (all)": wall}
            result = Result(
                f"one-pass, {name}",
                image,
                weight,
                drizzle_wall + wall,
                drizzle_cpu + cpu,
                singles_peak,
            )
            result.stages = timing
            result.rejected = lambda k, flags=flags: flags[k]
            result.flags = flags
            results.append(result)
    # The flags of every variant are kept for the measures, not counted in the peak.
    del singles, weights
    return results


# Measures -------------------------------------------------------------------------------------


class Measures:
    """What is measured of every stack: the truth's noise, the trail, the hits, the stars."""

    def __init__(self, sequence, truth, none):
        self.sequence = sequence
        self.truth = truth.image.astype(np.float64)
        self.none = none.image.astype(np.float64)
        n = sequence.n
        bits = none.context[0]
        self.cover = sum(((bits >> k) & 1) for k in range(n))
        self.full = self.cover == n
        self.partial = (self.cover > 0) & (self.cover < n)
        values = self.truth[self.full]
        self.sky = float(np.median(values))
        self.noise = float(1.4826 * np.median(np.abs(values - self.sky)))
        ny, nx = sequence.shape
        yy, xx = np.indices(sequence.shape)
        x, y, flux = sequence.x, sequence.y, sequence.flux
        tree = cKDTree(np.column_stack([x, y]))
        # Bright stars' neighbourhoods, where their steps hide a hit from drizzlepac's test.
        near_star = np.zeros(sequence.shape, bool)
        for i in np.flatnonzero(flux > 5e3):
            reach = 6 if flux[i] < 3e4 else 8
            r0, r1 = max(int(y[i]) - reach, 0), min(int(y[i]) + reach + 2, ny)
            c0, c1 = max(int(x[i]) - reach, 0), min(int(x[i]) + reach + 2, nx)
            near_star[r0:r1, c0:c1] |= (
                np.hypot(xx[r0:r1, c0:c1] - x[i], yy[r0:r1, c0:c1] - y[i]) < reach
            )
        self.near_star = near_star
        # Every outlier, on the reference grid, and grown: the rest is sky and stars.
        touched = np.zeros(sequence.shape, bool)
        self.hits = np.zeros(sequence.shape, bool)
        self.trail_frame_pixels = None
        for k in range(n):
            rays, trail = sequence.artefacts(k)
            self.hits |= sequence.on_reference(k, rays > 0)
            touched |= sequence.on_reference(k, (rays + (0 if trail is None else trail)) > 0.5)
        self.touched = binary_dilation(touched, iterations=3)
        excess = (self.none - self.truth) / self.noise
        self.raised = self.hits & (excess > 5)
        # The brightest isolated stars that no outlier touches, all inside every frame.
        isolated = np.array(
            [len(found) == 1 for found in tree.query_ball_point(np.column_stack([x, y]), 12.0)]
        )
        inside = (x > 20) & (x < nx - 21) & (y > 20) & (y < ny - 21)
        candidates = np.flatnonzero(isolated & inside & (flux > 2e4))
        keep = []
        for i in candidates:
            r, c = round(y[i]), round(x[i])
            if self.full[r, c] and not self.touched[r - 6 : r + 7, c - 6 : c + 7].any():
                keep.append(i)
        self.stars = np.array(keep)
        self.core = np.zeros(sequence.shape, bool)
        self.core_faint = np.zeros(sequence.shape, bool)
        self.core_bright = np.zeros(sequence.shape, bool)
        self.core_of = []
        for i in self.stars:
            r, c = round(y[i]), round(x[i])
            box = (slice(r - 3, r + 4), slice(c - 3, c + 4))
            disc = np.hypot(xx[box] - x[i], yy[box] - y[i]) <= CORE
            self.core[box] |= disc
            (self.core_faint if flux[i] <= BRIGHT else self.core_bright)[box] |= disc
            self.core_of.append((box, disc))
        self.n_bright = int(np.sum(flux[self.stars] > BRIGHT))
        self.sky_pixels = self.full & ~self.touched & ~near_star

    def trail_mask(self, across=0):
        sequence = self.sequence
        ny, nx = sequence.shape
        (x0, y0), (x1, y1) = sequence.trail_ends()
        t = np.linspace(0, 1, 4 * nx)
        fx, fy = x0 + t * (x1 - x0), y0 + t * (y1 - y0) + across
        rx, ry = sequence.motions[TRAIL_FRAME].to_reference(fx, fy)
        mask = np.zeros(sequence.shape, bool)
        for dx in (-1, 0, 1):
            for dy in (-1, 0, 1):
                ix, iy = np.round(rx).astype(int) + dx, np.round(ry).astype(int) + dy
                inside = (ix >= 0) & (ix < nx) & (iy >= 0) & (iy < ny)
                mask[iy[inside], ix[inside]] = True
        return mask

    def trail(self, image, where):
        usable = where & (np.abs(self.truth - self.sky) < 10 * self.noise)
        on = self.trail_mask() & usable
        beside = (self.trail_mask(-8) | self.trail_mask(8)) & usable
        if on.sum() < 50 or beside.sum() < 100:
            return float("nan")
        return (np.mean(image[on]) - np.mean(image[beside])) / self.noise

    def rays(self, image, where):
        """Fraction of raised hit pixels still > 3 sigma, and of the hits' flux left (%)."""
        raised = self.raised & where
        if not raised.any():
            return float("nan"), float("nan")
        left = (image - self.truth) / self.noise
        kept = (self.none - self.truth)[raised].sum()
        return (
            100 * float(np.mean(left[raised] > 3)),
            100 * float((image - self.truth)[raised].sum() / kept),
        )

    def cores(self, image):
        """The core fluxes' change against the stack without rejection: median and largest, %."""
        changes = []
        for box, disc in self.core_of:
            ours = (image[box][disc] - self.sky).sum()
            theirs = (self.none[box][disc] - self.sky).sum()
            changes.append(ours / theirs - 1)
        changes = 100 * np.array(changes)
        return float(np.median(changes)), float(changes[np.argmax(np.abs(changes))])

    def report(self, result):
        image = result.image.astype(np.float64)
        line = {
            "trail": self.trail(image, self.full),
            "trail_edge": self.trail(image, self.partial),
        }
        line["rays"], line["rays_flux"] = self.rays(image, self.full & ~self.near_star)
        line["rays_star"], line["rays_star_flux"] = self.rays(image, self.full & self.near_star)
        line["rays_edge"], line["rays_edge_flux"] = self.rays(image, self.partial)
        line["core_median"], line["core_worst"] = self.cores(image)
        sky = image[self.sky_pixels]
        line["noise"] = float(1.4826 * np.median(np.abs(sky - np.median(sky)))) / self.noise
        if result.rejected is not None:
            sequence = self.sequence
            line["core_sharp"] = 100 * float(np.mean(result.rejected(sequence.sharpest)[self.core]))
            line["core_soft"] = 100 * float(np.mean(result.rejected(sequence.softest)[self.core]))
            sharp = result.rejected(sequence.sharpest)
            for key, core in (("faint", self.core_faint), ("bright", self.core_bright)):
                line[f"core_sharp_{key}"] = 100 * float(np.mean(sharp[core]))
            per_frame = [result.rejected(k)[self.core] for k in range(sequence.n)]
            line["core_all"] = 100 * float(np.mean(per_frame))
            line["core_any"] = 100 * float(np.mean(np.any(per_frame, axis=0)))
            sky, edge = [], []
            for k in range(sequence.n):
                rejected = result.rejected(k)
                sky.append(np.mean(rejected[self.sky_pixels]))
                edge.append(np.mean(rejected[self.partial & ~self.touched & ~self.near_star]))
            line["sky"] = 100 * float(np.mean(sky))
            line["sky_edge"] = 100 * float(np.mean(edge))
        return line


# Printing -------------------------------------------------------------------------------------


def mb(size):
    return f"{size / 1e6:.0f} MB"


def print_costs(runs, n_frames):
    """Print the costs of each scheme: medians over the runs (and the least wall time)."""
    repeats = len(runs)
    print(f"\nCosts, median of {repeats} run(s) (wall and CPU: this process and its workers)")
    head = (
        f"{'scheme':24s} {'wall s':>7s} {'(least)':>7s} {'s/frame':>8s} {'CPU s':>7s}"
        f" {'CPU/frame':>9s} {'+wall/frame':>11s} {'+CPU/frame':>10s} {'scratch peak':>12s}"
    )
    print(head)
    print("-" * len(head))
    none_wall = np.median([run[0].wall for run in runs])
    none_cpu = np.median([run[0].cpu for run in runs])
    for column in range(len(runs[0])):
        results = [run[column] for run in runs]
        wall = float(np.median([r.wall for r in results]))
        cpu = float(np.median([r.cpu for r in results]))
        least = min(r.wall for r in results)
        extra = (
            ("", "")
            if column == 0
            else (
                f"{(wall - none_wall) / n_frames:.3f}",
                f"{(cpu - none_cpu) / n_frames:.3f}",
            )
        )
        print(
            f"{results[0].name:24s} {wall:7.2f} {least:7.2f} {wall / n_frames:8.3f} {cpu:7.2f}"
            f" {cpu / n_frames:9.3f} {extra[0]:>11s} {extra[1]:>10s}"
            f" {mb(max(r.scratch for r in results)):>12s}"
        )
    print("  +wall, +CPU: what rejection adds per frame to the stack without it (medians)")
    for column in range(len(runs[0])):
        results = [run[column] for run in runs]
        stages = ", ".join(
            f"{k} {np.median([r.stages.get(k, np.nan) for r in results]):.2f} s"
            for k in results[0].stages
        )
        print(f"  {results[0].name}: {stages}")


def print_measures(lines, sequence):
    print("\nWhat each rejects (against the truth stack; sigma = its sky noise)")
    columns = [
        ("trail", "trail sig", "{:+.2f}"),
        ("rays", "CR px left %", "{:.2f}"),
        ("rays_flux", "CR flux %", "{:.2f}"),
        ("rays_star", "CR@star px %", "{:.1f}"),
        ("rays_star_flux", "CR@star flux %", "{:.1f}"),
        ("core_median", "core med %", "{:+.3f}"),
        ("core_worst", "core worst %", "{:+.2f}"),
        ("core_sharp", "cores rej sharp %", "{:.2f}"),
        ("core_soft", "cores rej soft %", "{:.2f}"),
        ("core_sharp_faint", "sharp <=8e4 %", "{:.2f}"),
        ("core_sharp_bright", "sharp >8e4 %", "{:.2f}"),
        ("core_all", "cores rej mean %", "{:.2f}"),
        ("core_any", "cores rej any %", "{:.1f}"),
        ("sky", "sky rej %", "{:.3f}"),
        ("noise", "sky noise", "{:.3f}"),
    ]
    _table(lines, columns)
    print(
        f"  sharpest frame {sequence.sharpest} (FWHM {sequence.fwhm[sequence.sharpest]:.2f} px), "
        f"softest {sequence.softest} ({sequence.fwhm[sequence.softest]:.2f} px)"
    )
    print("\nAt the edges (output pixels that some frames do not cover)")
    columns = [
        ("trail_edge", "trail sig", "{:+.2f}"),
        ("rays_edge", "CR px left %", "{:.2f}"),
        ("rays_edge_flux", "CR flux %", "{:.2f}"),
        ("sky_edge", "sky rej %", "{:.3f}"),
    ]
    _table(lines, columns)


def _table(lines, columns):
    head = f"{'scheme':24s} " + " ".join(
        f"{title:>{max(len(title), 8)}s}" for _, title, _ in columns
    )
    print(head)
    print("-" * len(head))
    for name, line in lines:
        cells = []
        for key, title, form in columns:
            value = line.get(key)
            text = "" if value is None else form.format(value)
            cells.append(f"{text:>{max(len(title), 8)}s}")
        print(f"{name:24s} " + " ".join(cells))


def print_exactness(none, exact, measures):
    finite = np.isfinite(none.image) & (none.weight > 0)
    a, b = exact.image[finite].astype(np.float64), none.image[finite].astype(np.float64)
    relative = np.abs(a - b) / np.maximum(np.abs(b), 1e-30)
    eps = float(np.finfo(np.float32).eps)
    w = np.abs(exact.weight[finite] - none.weight[finite]) / none.weight[finite]
    same_cover = np.array_equal(np.isfinite(exact.image), np.isfinite(none.image))
    print(
        "\nExactness, one-pass with nothing rejected against the stack without rejection: "
        f"image {np.max(relative) / eps:.1f} float32 eps at most ({np.median(relative) / eps:.2f} "
        f"median; {np.max(np.abs(a - b)) / measures.noise:.2g} sky sigma at most), weight "
        f"{np.max(w) / eps:.1f} eps at most, the same pixels covered: {same_cover}"
    )
    return {"image": np.max(relative) / eps, "weight": np.max(w) / eps, "cover": same_cover}


def main(argv=None):
    """Run the benchmark; return the exactness figures and the measures of each scheme."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=parse_size, default=(1350, 2000), help="WIDTHxHEIGHT")
    parser.add_argument("--frames", type=int, default=10)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=3, help="runs of each scheme, alternating")
    parser.add_argument("--folder", help="where the sequence is written (kept); default a temp")
    args = parser.parse_args(argv)
    if not 4 <= args.frames <= 32:
        parser.error("--frames: 4 to 32")
    temporary = tempfile.mkdtemp(prefix="bench_rejection.")
    try:
        folder = args.folder or os.path.join(temporary, "sequence")
        os.makedirs(folder, exist_ok=True)
        sequence = Sequence(folder, args.size, args.frames)
        ny, nx = args.size
        start = time.perf_counter()
        if not sequence.written():
            sequence.write()
        print(
            f"{args.frames} mono frames of {nx} x {ny}, FWHM {FWHM[0]} to {FWHM[1]} px, "
            f"{round(ny * nx / CR_AREA)} cosmic rays a frame, a trail in frame {TRAIL_FRAME}; "
            f"{args.jobs} jobs; written in {time.perf_counter() - start:.1f} s",
            flush=True,
        )
        scratch = os.path.join(temporary, "scratch")
        os.makedirs(scratch)
        # The workers started once before anything is timed.
        truth = run_stack_frames(sequence.clean, os.path.join(scratch, "truth"), args.jobs, False)
        runs = []
        for k in range(args.repeat):
            none = run_stack_frames(
                sequence.dirty, os.path.join(scratch, f"b{k}"), args.jobs, False
            )
            today = run_stack_frames(
                sequence.dirty, os.path.join(scratch, f"a{k}"), args.jobs, True
            )
            for result in runs[-1] if runs else ():
                result.forget()
            runs.append(
                [none, today, *one_pass(sequence, os.path.join(scratch, f"c{k}"), args.jobs)]
            )
            print(f"run {k + 1} of {args.repeat} done", flush=True)
        none, today, *single = runs[-1]
        two_pass_masks(sequence, scratch, args.jobs, today)
        measures = Measures(sequence, truth, none)
        print(
            f"{len(measures.stars)} bright isolated stars measured ({measures.n_bright} of them "
            f"brighter than {BRIGHT:.0f}); "
            f"{int(measures.raised.sum())} hit pixels raised > 5 sigma without rejection "
            f"({int((measures.raised & measures.near_star).sum())} near bright stars); "
            f"{100 * np.mean(measures.partial):.1f} % of the output partly covered, "
            f"{100 * np.mean((measures.cover > 0) & (measures.cover < LEAST)):.2f} % by fewer "
            f"than {LEAST} frames"
        )
        results = [none, today, *single]
        print_costs(runs, args.frames)
        exact = print_exactness(none, single[0], measures)
        lines = [(r.name, measures.report(r)) for r in [truth, *results]]
        lines[0] = ("truth (no outliers)", lines[0][1])
        print_measures(lines, sequence)
    finally:
        shutil.rmtree(temporary, ignore_errors=True)
    return {"exact": exact, "measures": dict(lines)}


if __name__ == "__main__":
    main()
