"""Benchmark choosing the field method once per sequence against ``auto`` on every frame.

``method="auto"`` cross-validates some 13 candidate fields on every star table. In a
sequence it nearly always chooses the same one. This prints, per sequence and per
frame: the number of stars, auto's own choice and its CV RMS, the CV RMS of the
sequence's choice (auto's choice on the first table) on that frame's stars, what
the re-check of `SequenceChoice` decides, and, where the motion is known, the RMS
error of each field against the truth between the stars (at 6000 points spread
over the frame). Then the CPU time per frame of auto and of the sequence's choice
with its re-check.

The sequences:

- ``bench_pipeline`` at full size (8 frames of 4000 x 2700, about 1450 stars a
  table): the tables of ``benchmarks/bench_pipeline.py --keep`` given with
  ``--tables DIR`` (its truth is the benchmark's motion, whatever its seed);
- ``bench_pipeline --quick`` (8 frames of 1000 x 675), made and tabled here;
- ``night_sequence``: the real night of `astro_offsets.datasets` (rotation, a
  meridian flip, a shaken, a clouded, a dewed and a capped frame), tabled here;
- few stars: the quick sequence's motion measured at 25 random stars a frame;
- one frame apart: the quick sequence's motion at 300 stars a frame, with a
  local distortion (a 1.5 px bump) in one frame, which no polynomial follows.

Run: ``python benchmarks/bench_choice.py [--tables /tmp/prof]`` (a minute or two).
"""

import argparse
import glob
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

import astro_offsets
from astro_offsets import OffsetModel, make_tables
from astro_offsets.datasets import LocalDistortion, night_sequence, star_offsets
from astro_offsets.field import SEQUENCE_SELECTION, SequenceChoice
from astro_offsets.stars import read_table

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_pipeline  # the sequence of the pipeline benchmark

GRID = (60, 100)  # points (ny, nx) where the fields are compared with the truth


def truth_error(model, motion, shape):
    """Return the RMS length of the field's error against the true motion, over the frame."""
    ny, nx = shape
    py, px = np.meshgrid(np.linspace(0, ny - 1, GRID[0]), np.linspace(0, nx - 1, GRID[1]))
    dx, dy = model(px, py)
    tx, ty = motion.offset(px, py)
    return float(np.sqrt(np.mean((dx - tx) ** 2 + (dy - ty) ** 2)))


def cpu(function, *args, **kwargs):
    """Return what ``function`` returns and the CPU seconds it took."""
    start = time.process_time()
    result = function(*args, **kwargs)
    return result, time.process_time() - start


def sequence_report(name, frames, shape):
    """Print the figures of one sequence: ``frames`` is a list of (label, table, motion)."""
    print(f"\n## {name}: {len(frames)} tables of {shape[1]} x {shape[0]}")
    first_label, first_table, _ = frames[0]
    first, _ = cpu(OffsetModel.from_table, first_table, method="auto", source=first_label)
    choice = SequenceChoice.from_model(first)
    print(f"sequence's choice (auto on {first_label}): {choice}")
    header = (
        f"{'table':28s} {'stars':>5s} {'auto chooses':24s} {'auto CV':>7s} {'seq CV':>7s} "
        f"{'re-check':14s} {'err auto':>8s} {'err seq':>8s} {'err used':>8s} "
        f"{'t auto':>6s} {'t seq':>6s}"
    )
    print(header)
    differ = fallbacks = 0
    times = {"auto": [], "sequence": []}
    errors = {"auto": [], "seq": [], "used": []}
    for label, table, motion in frames:
        auto, t_auto = cpu(OffsetModel.from_table, table, method="auto", source=label)
        fixed = OffsetModel.from_table(table, source=label, **choice.options())
        used, t_seq = cpu(choice.model, table, source=label)
        kept = used.meta["selection"] == SEQUENCE_SELECTION
        times["auto"].append(t_auto)
        times["sequence"].append(t_seq)
        same = (auto.method, auto.parameters) == (choice.method, choice.parameters)
        differ += not same
        fallbacks += not kept
        chose = f"{auto.method} {auto._method.describe(auto._value)}" + ("" if same else " *")
        err = {"auto": "", "seq": "", "used": ""}
        if motion is not None:
            for key, model in (("auto", auto), ("seq", fixed), ("used", used)):
                value = truth_error(model, motion, shape)
                errors[key].append(value)
                err[key] = f"{value:8.4f}"
        seq_cv = fixed.cv_rms
        print(
            f"{os.path.basename(label)[:28]:28s} {len(auto):5d} {chose:24s} "
            f"{auto.cv_rms:7.4f} {seq_cv:7.4f} {'kept' if kept else 'own auto':14s} "
            f"{err['auto']:>8s} {err['seq']:>8s} {err['used']:>8s} {t_auto:6.3f} {t_seq:6.3f}"
        )
    print(
        f"frames whose auto differs from the first's: {differ} of {len(frames)}; "
        f"re-check fell back to the frame's own auto: {fallbacks}"
    )
    if errors["auto"]:
        rms = {key: float(np.sqrt(np.mean(np.square(v)))) for key, v in errors.items()}
        print(
            f"RMS error against the truth over the frames: per-frame auto {rms['auto']:.4f} px, "
            f"sequence's choice everywhere {rms['seq']:.4f} px, with the re-check "
            f"{rms['used']:.4f} px"
        )
    print(
        f"CPU per frame: auto {np.mean(times['auto']):.3f} s, sequence's choice with its "
        f"re-check {np.mean(times['sequence']):.3f} s (mean over the frames)"
    )


def tabled(frames, reference, jobs):
    """Make the star tables of frames; return their paths, in order, and the frames tabled."""
    results = make_tables(frames, reference, n_jobs=jobs)
    done = [(r.path, r.output) for r in results if r.output and os.path.exists(r.output)]
    return done


def pipeline_sequence(folder, shape, jobs):
    sequence = bench_pipeline.make_sequence(folder, shape, 8, 0, jobs)
    frames = [str(sequence.folder / name) for name in sequence.frames]
    motion_of = dict(zip(frames, sequence.motions, strict=True))
    return [
        (table, read_table(table), motion_of[frame])
        for frame, table in tabled(frames, frames[0], jobs)
    ]


def kept_tables(folder):
    """The tables of a full-size ``bench_pipeline --keep`` run, with their truth."""
    motions = bench_pipeline.motions(bench_pipeline.BASE_SHAPE, 8)
    paths = sorted(glob.glob(os.path.join(folder, "light_*.offsets_table.fits")))
    return [(p, read_table(p), motions[int(Path(p).name[6:9])]) for p in paths]


def night(folder, jobs):
    made = night_sequence(folder)
    motion_of = dict(zip(made.frames, made.motions, strict=True))
    return [
        (table, read_table(table), motion_of[frame])
        for frame, table in tabled(made.frames, made.reference, jobs)
    ]


def synthetic(n_stars, bumped=None):
    """Tables of random stars measured on the quick sequence's motion (0.05 px noise)."""
    from astropy.table import Table

    shape = bench_pipeline.QUICK_SHAPE
    motions = bench_pipeline.motions(shape, 8)[1:]
    rows = []
    for k, motion in enumerate(motions, 1):
        if k == bumped:
            ny, nx = shape
            motion = LocalDistortion(motion, (0.6 * nx, 0.4 * ny), 0.08 * nx, (1.5, -1.0))
        x, y, dx, dy, _ = star_offsets(np.random.default_rng(k), motion, shape, n_stars)
        table = Table({"x": x, "y": y, "x_offset": dx, "y_offset": dy})
        rows.append((f"stars{n_stars}_{k:03d}", table, motion))
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--tables",
        help="folder of the full-size bench_pipeline tables (light_*.offsets_table.fits)",
    )
    parser.add_argument("--jobs", type=int, default=2, help="workers making the tables")
    args = parser.parse_args()
    print(f"astro_offsets {astro_offsets.__version__}, numpy {np.__version__}")
    if args.tables:
        sequence_report("bench_pipeline, full size", kept_tables(args.tables), (2700, 4000))
    with tempfile.TemporaryDirectory() as scratch:
        quick = Path(scratch) / "quick"
        quick.mkdir()
        frames = pipeline_sequence(quick, bench_pipeline.QUICK_SHAPE, args.jobs)
        sequence_report("bench_pipeline --quick", frames, bench_pipeline.QUICK_SHAPE)
        frames = night(Path(scratch) / "night", args.jobs)
        sequence_report("night_sequence", frames, (600, 900))
    sequence_report("few stars (25 a frame)", synthetic(25), bench_pipeline.QUICK_SHAPE)
    sequence_report(
        "frame 4 apart (300 stars, a local bump in frame 4)",
        synthetic(300, bumped=4),
        bench_pipeline.QUICK_SHAPE,
    )


if __name__ == "__main__":
    main()
