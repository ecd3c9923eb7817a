"""Benchmark ``astro-offsets run`` on raw frames: time per frame, where it goes, peak memory.

Writes a sequence of synthetic Bayer raw DNG frames (RGGB, 14 bits), 7952 x
5304 (42 Mpix) by default: a star field (about 200 stars per Mpix, as
``bench_pipeline.py`` draws them) seen through `CameraMotion` (a drift, a
field rotation, barrel distortion) that moves on from frame to frame, sky and
photon noise, and the same hot pixels in every frame. Longer sequences reuse
four distinct frames through symbolic links (as ``bench_stack.py`` does),
which read the same, so that ``--frames 100`` is cheap to write; a link to
the reference is a frame that has not moved.

Then, each in a fresh process that runs the command line in-process
(``astro_offsets._cli.main``) while this process samples the memory of that
process and of its workers (the peak of their summed RSS, which counts
memory they share once per process, and of their PSS, which counts it once):

1. ``astro-offsets run FRAME... --out STACK --jobs N`` with its default
   options (selection and rejection on, a checkpoint every 10 frames beside
   the output, where rejection keeps its frames).
2. Unless ``--no-commands``: today's path for the same stack, ``tables``,
   ``maps --image`` and ``stack`` with their default options, each timed
   apart, ``stack`` alone giving today's "stack alone" figure.
3. With ``--profile``: ``run`` again with ``--jobs 1``, every stage then in
   one process, timed stage by stage.

Printed for each: the wall time, the time per frame, the CPU time of the
process tree (the main process and the workers alive at its end), the peak
memory, and the most bytes on disk under the command's output folder, sampled
each second: the checkpoint (where rejection keeps its frames, singles and
medians), the scratch directory and the outputs. The frames, the outputs and
the scratch all go in a temporary folder in ``--scratch`` (by default the
system's temporary directory), removed at the end. The stages are timed
by wrapping the package's functions in the main process: with ``--jobs -1``
the workers' stages (reading, stars, field, keeping) are not seen there, only
their CPU time; the second pass (medians, masks, drizzle) is. With
``--profile`` (``--jobs 1``) every stage is seen; nested stages are included
in their callers' time (the tree is printed indented). Each stage's wall
time and the CPU time of the process meanwhile (all its threads: the
stage's own threads, and any other thread that ran then, such as the
read-ahead) are printed: on a busy machine the CPU time is the steadier
figure. So are the time of each stage's first start and last end, from the
command's start: the run's timeline.

Timings are noisy on a shared machine: the load average before and after
each run is printed with the figures.

Run: ``python benchmarks/bench_run.py [--frames 8] [--jobs -1] [--size NY NX]
[--scratch DIR] [--profile] [--no-commands] [--keep]``.
"""

import argparse
import collections
import contextlib
import functools
import json
import multiprocessing
import os
import shutil
import tempfile
import threading
import time

import numpy as np
import psutil
from bench_stack import tree_memory  # beside this script

SHAPE = (5304, 7952)
DISTINCT = 4
STARS_PER_MPIX = 203.0
SKY = (180.0, 260.0, 230.0)  # per colour filter (R, G, B), after the black level
BLACK = 512
HOT_PIXELS = 2000

# The stages timed: (module, attribute, label, parent label). A method is
# "Class.method"; the parent only indents the printed tree.
STAGES = (
    ("astro_offsets.stack._reading", "Frames.read_raw", "read + decode", None),
    ("astro_offsets.maps._offset_map", "OffsetMap.read", "map read (stack)", None),
    ("astro_offsets.pipeline._stream", "hot_pixels", "hot pixels", None),
    ("astro_offsets.pipeline._stream", "stars_image", "stars image", None),
    ("astro_offsets.stars._make_tables", "detect_stars", "detection", None),
    ("astro_offsets.stars._make_tables", "match_stars", "matching", None),
    ("astro_offsets.pipeline._stream", "write_table", "table written", None),
    ("astro_offsets.pipeline._stream", "read_model", "field fit", None),
    ("astro_offsets.pipeline._stream", "make_map", "map made", None),
    ("astro_offsets.field._model", "OffsetModel.to_map", "to_map (each pass)", None),
    ("astro_offsets.pipeline._stream", "map_measures", "map measures", None),
    ("astro_offsets.stack._reading", "Frames.prepare", "prepare (normalise)", None),
    ("astro_offsets.stack._reading", "hot_pixels", "hot pixels (stack)", "prepare (normalise)"),
    ("astro_offsets.stack._rejection_passes", "store_frame", "store (write + drizzle)", None),
    ("astro_offsets.stack._rejection", "Rejection.add", "keep (stack)", None),
    ("astro_offsets.stack._rejection", "Rejection.combine", "medians", None),
    ("astro_offsets.stack._rejection", "Rejection.mask", "masks (blot + compare)", None),
    ("astro_offsets.stack._stacker", "Stacker.add", "drizzle: add", None),
    ("astro_offsets.stack._stacker", "Stacker.stack", "drizzle: finish", None),
    ("astro_offsets.stack._product", "Stack.write", "stack written", None),
)


# -- the sequence ------------------------------------------------------------------------


def write_sequence(folder, shape, n_frames, seed=0):
    """Write the raw frames, four distinct ones and links to them; return their paths."""
    from astro_offsets.datasets import CameraMotion, star_field, write_dng

    rng = np.random.default_rng(seed)
    ny, nx = shape
    n_stars = round(STARS_PER_MPIX * ny * nx / 1e6)
    x, y, flux = star_field(rng, n_stars, shape, margin=100, faintest=800.0)
    warmth = rng.uniform(-1, 1, n_stars)
    colours = np.stack([1 + 0.45 * warmth, np.ones(n_stars), 1 - 0.45 * warmth], axis=1)
    hot = (rng.integers(0, ny, HOT_PIXELS), rng.integers(0, nx, HOT_PIXELS))
    hot_level = rng.uniform(2000, 12000, HOT_PIXELS)
    filters = np.zeros(shape, np.uint8)  # RGGB
    filters[0::2, 1::2] = 1
    filters[1::2, 0::2] = 1
    filters[1::2, 1::2] = 2
    # Lengths scale with the diagonal, as in the demo's motions.
    scale = np.hypot(ny, nx) / np.hypot(1600, 2400)
    pole = (-0.8 * nx, 2.6 * ny)
    frames = []
    for k in range(n_frames):
        path = os.path.join(folder, f"DSC{k:04d}.dng")
        frames.append(path)
        if k >= DISTINCT:
            os.symlink(os.path.basename(frames[k % DISTINCT]), path)
            continue
        motion = CameraMotion(
            shape,
            drift=(9.4 * k * scale, -5.7 * k * scale),
            rotation_deg=0.02 * k,
            pole=pole,
            barrel=2.5e-9 / scale**2,
        )
        fx, fy = motion.to_frame(x, y)
        mosaic = np.empty(shape, np.float32)
        for c in range(3):
            plane = stamped_stars(shape, fx, fy, flux * colours[:, c], 1.3)
            plane += SKY[c]
            mosaic[filters == c] = plane[filters == c]
            del plane
        mosaic += rng.standard_normal(shape, np.float32) * np.sqrt(mosaic + 36.0)
        mosaic[hot] = hot_level
        raw = np.clip(np.round(mosaic) + BLACK, 0, 2**14 - 1).astype(np.uint16)
        del mosaic
        write_dng(path, raw, black_level=BLACK, exptime=30.0, iso=3200, model="bench_run")
    return frames


def stamped_stars(shape, x, y, flux, sigma, radius=8):
    """Return an image of round Gaussian stars integrated over each pixel, in stamps.

    `render_stars`'s stars, each within ``radius`` pixels (6 sigma) of its
    centre: at 42 Mpix, `render_stars` (every star across the whole image)
    takes minutes a frame.
    """
    from scipy.special import erf

    image = np.zeros(shape, np.float32)
    ny, nx = shape
    offsets = np.arange(-radius, radius + 1)
    edges = np.arange(-radius, radius + 2) - 0.5
    scale = 1 / (np.sqrt(2) * sigma)
    for xs, ys, fs in zip(x, y, flux, strict=True):
        cx, cy = round(xs), round(ys)
        gx = np.diff(erf((cx + edges - xs) * scale)) / 2
        gy = np.diff(erf((cy + edges - ys) * scale)) / 2
        columns, rows = cx + offsets, cy + offsets
        keep_x, keep_y = (columns >= 0) & (columns < nx), (rows >= 0) & (rows < ny)
        if keep_x.any() and keep_y.any():
            stamp = np.outer(gy[keep_y], gx[keep_x]) * fs
            image[
                rows[keep_y][0] : rows[keep_y][-1] + 1, columns[keep_x][0] : columns[keep_x][-1] + 1
            ] += stamp
    return image


# -- timing the stages in the child ------------------------------------------------------


def install_timers(spent):
    """Wrap the stages' functions so that ``spent[label]`` sums their wall time and calls."""
    import importlib

    lock = threading.Lock()

    def timed(label, function):
        @functools.wraps(function)
        def wrapper(*args, **kwargs):
            start, cpu = time.perf_counter(), time.process_time()
            try:
                return function(*args, **kwargs)
            finally:
                with lock:
                    end = time.perf_counter()
                    spent[label][0] += end - start
                    spent[label][1] += 1
                    spent[label][2] += time.process_time() - cpu
                    # When the stage first started and last ended, from the start.
                    spent[label][3] = min(spent[label][3], start - spent["start"])
                    spent[label][4] = end - spent["start"]

        return wrapper

    for module_name, attribute, label, _ in STAGES:
        module = importlib.import_module(module_name)
        owner, name = module, attribute
        if "." in attribute:
            class_name, name = attribute.split(".")
            owner = getattr(module, class_name)
        function = owner.__dict__[name] if isinstance(owner, type) else getattr(owner, name)
        if isinstance(function, staticmethod | classmethod):
            kind = type(function)
            setattr(owner, name, kind(timed(label, function.__func__)))
        else:
            setattr(owner, name, timed(label, function))


def command_in_child(argv, timers, queue):
    """Run ``astro-offsets argv`` in this process; put its figures on ``queue``."""
    import io

    spent = collections.defaultdict(lambda: [0.0, 0, 0.0, np.inf, 0.0])
    from astro_offsets import _cli

    if timers:
        install_timers(spent)
    start = spent["start"] = time.perf_counter()
    output = io.StringIO()
    with contextlib.redirect_stdout(output):
        status = _cli.main(argv)
    seconds = time.perf_counter() - start
    workers = psutil.Process().children(recursive=True)
    worker_cpu = 0.0
    for p in workers:
        with contextlib.suppress(psutil.NoSuchProcess):
            worker_cpu += p.cpu_times().user + p.cpu_times().system
    from joblib.externals.loky import get_reusable_executor

    get_reusable_executor().shutdown(wait=True)
    own = psutil.Process().cpu_times()
    queue.put(
        {
            "status": status,
            "seconds": seconds,
            "main cpu": own.user + own.system,
            "worker cpu": worker_cpu,
            "stages": {k: v for k, v in spent.items() if k != "start"},
            "output": output.getvalue()[-2000:],
        }
    )


def folder_bytes(folders):
    """Return the bytes of the files under ``folders`` (their blocks, as ``du``)."""
    total = 0
    for folder in folders:
        for root, _, files in os.walk(folder):
            for name in files:
                with contextlib.suppress(FileNotFoundError):
                    total += os.lstat(os.path.join(root, name)).st_blocks * 512
    return total


def run_command(argv, *, timers=True, scratch_dirs=()):
    """Run ``astro-offsets argv`` in a fresh process, sampling its memory; return figures."""
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    child = context.Process(target=command_in_child, args=(argv, timers, queue))
    load_before = os.getloadavg()
    child.start()
    watched = psutil.Process(child.pid)
    peak_rss = peak_pss = peak_scratch = 0
    last_disk = 0.0
    while child.is_alive() and queue.empty():
        try:
            rss, pss = tree_memory(watched)
        except psutil.NoSuchProcess:
            break
        peak_rss, peak_pss = max(peak_rss, rss), max(peak_pss, pss)
        now = time.monotonic()
        if scratch_dirs and now - last_disk > 1.0:
            peak_scratch = max(peak_scratch, folder_bytes(scratch_dirs))
            last_disk = now
        time.sleep(0.05)
    figures = queue.get()
    child.join()
    figures.update(
        {
            "peak RSS": peak_rss / 1e9,
            "peak PSS": peak_pss / 1e9,
            "peak scratch": peak_scratch / 1e9,
            "load before": load_before,
            "load after": os.getloadavg(),
        }
    )
    if figures["status"] != 0:
        raise RuntimeError(f"astro-offsets {argv[0]} failed: {figures['output']}")
    return figures


def show(label, figures, n_frames):
    seconds = figures["seconds"]
    cpu = figures["main cpu"] + figures["worker cpu"]
    print(
        f"{label}: {seconds:.1f} s, {seconds / n_frames:.2f} s/frame; CPU {cpu:.1f} s "
        f"(main {figures['main cpu']:.1f}, workers {figures['worker cpu']:.1f}), "
        f"{cpu / n_frames:.2f} s/frame; peak RSS {figures['peak RSS']:.2f} GB, "
        f"PSS {figures['peak PSS']:.2f} GB; scratch {figures['peak scratch']:.1f} GB; "
        "load average {:.1f} -> {:.1f}".format(figures["load before"][0], figures["load after"][0]),
        flush=True,
    )
    stages = figures["stages"]
    if stages:
        print(
            f"  stages seen in the main process: wall s, calls, wall s/frame over {n_frames}, "
            "CPU s/frame of the process (all its threads) meanwhile, first start and last "
            "end (s from the command's start)"
        )
        for _, _, name, parent in STAGES:
            if name in stages:
                total, calls, cpu, first, last = stages[name]
                indent = "    " if parent else ""
                print(
                    f"    {indent}{name:32} {total:8.2f} {calls:5d} {total / n_frames:7.2f} "
                    f"{cpu / n_frames:7.2f} {first:8.1f} {last:8.1f}",
                    flush=True,
                )


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, nargs=2, metavar=("NY", "NX"))
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--jobs", type=int, default=-1)
    parser.add_argument("--scratch", help="where the frames, outputs and scratch go")
    parser.add_argument("--profile", action="store_true", help="also run with --jobs 1")
    parser.add_argument(
        "--no-commands", action="store_true", help="do not time tables, maps and stack"
    )
    parser.add_argument("--keep", action="store_true", help="keep the folder")
    args = parser.parse_args()
    shape = tuple(args.size) if args.size else SHAPE
    n = args.frames
    print(
        f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}; {n} raw frames of "
        f"{shape[1]} x {shape[0]} ({shape[0] * shape[1] / 1e6:.1f} Mpix), "
        f"{min(n, DISTINCT)} distinct; --jobs {args.jobs}",
        flush=True,
    )
    folder = tempfile.mkdtemp(prefix="bench_run_", dir=args.scratch)
    free = shutil.disk_usage(folder).free
    print(f"in {folder}, {free / 1e9:.0f} GB free", flush=True)
    try:
        light = os.path.join(folder, "light")
        os.mkdir(light)
        start = time.perf_counter()
        frames = write_sequence(light, shape, n)
        os.sync()
        print(f"wrote the sequence in {time.perf_counter() - start:.0f} s", flush=True)
        results = {}

        def run(label, argv, out_dir, jobs, timers=True):
            os.makedirs(out_dir, exist_ok=True)
            scratch = os.path.join(out_dir, "scratch")
            os.makedirs(scratch, exist_ok=True)
            out = os.path.join(out_dir, "stack.fits")
            argv = [*argv, "--jobs", str(jobs)]
            if argv[0] in ("run", "stack"):
                argv += ["--out", out, "--scratch", scratch]
            figures = run_command(argv, timers=timers, scratch_dirs=(out_dir,))
            results[label] = figures
            show(label, figures, n)
            return figures

        tables = os.path.join(folder, "tables")
        os.mkdir(tables)
        run("run", ["run", *frames, "--tables", tables], os.path.join(folder, "run"), args.jobs)
        shutil.rmtree(os.path.join(folder, "run"))
        if not args.no_commands:
            three = os.path.join(folder, "three")
            made = os.path.join(three, "tables")
            maps = os.path.join(three, "maps")
            run(
                "tables",
                ["tables", *frames, "--reference", frames[0], "--outdir", made],
                three,
                args.jobs,
                timers=False,
            )
            listed = sorted(os.path.join(made, name) for name in os.listdir(made))
            run(
                "maps",
                ["maps", *listed, "--image", frames[0], "--outdir", maps],
                three,
                args.jobs,
                timers=False,
            )
            stack_dir = os.path.join(three, "stack")
            run("stack alone", ["stack", *frames, "--maps", maps], stack_dir, args.jobs)
            total = sum(results[k]["seconds"] for k in ("tables", "maps", "stack alone"))
            print(
                f"three commands: {total:.1f} s, {total / n:.2f} s/frame; run / three = "
                f"{results['run']['seconds'] / total:.2f}; run / stack alone = "
                f"{results['run']['seconds'] / results['stack alone']['seconds']:.2f}",
                flush=True,
            )
            shutil.rmtree(three)
        if args.profile:
            run(
                "run, --jobs 1",
                ["run", *frames, "--tables", tables],
                os.path.join(folder, "run1"),
                1,
            )
        summary = {
            label: {k: v for k, v in figures.items() if k != "output"}
            for label, figures in results.items()
        }
        print("figures:", json.dumps(summary), flush=True)
    finally:
        if args.keep:
            print(f"kept {folder}")
        else:
            shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
