"""The ``astro-offsets`` command line."""

import argparse
import os
import sys
import warnings

from tqdm import tqdm

from ._demo import run_demo
from ._frames import frame_shape
from ._model import OffsetModel
from ._naming import map_path
from ._version import __version__

__all__ = ["main"]

PROG = "astro-offsets"


def _positive_int(text):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _jobs(text):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if value == 0:
        raise argparse.ArgumentTypeError("0 jobs: use 1 for serial, -1 for all cores")
    return value


def _parser():
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Dense per-pixel offset maps from star tables, for drizzle stacking.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    maps = commands.add_parser(
        "maps",
        help="write an offset map <stem>.offsets.fits for each star table",
        description=(
            "Write one offset map per star table: <stem>.offsets.fits, where <stem> is "
            "the table's name without its .offsets_table[_clean].<ext> ending. An existing "
            "map is kept unless --overwrite."
        ),
    )
    maps.add_argument(
        "tables",
        nargs="+",
        metavar="TABLE",
        help="star tables (FITS, ECSV, ... any format astropy reads)",
    )
    size = maps.add_mutually_exclusive_group(required=True)
    size.add_argument(
        "--shape",
        nargs=2,
        type=_positive_int,
        metavar=("NY", "NX"),
        help="frame size in pixels (rows, columns)",
    )
    size.add_argument(
        "--image", metavar="FRAME", help="take the frame size from this frame (raw file or FITS)"
    )
    maps.add_argument(
        "--outdir",
        metavar="DIR",
        help="output directory (created if missing); default: beside each table",
    )
    maps.add_argument(
        "--jobs",
        type=_jobs,
        default=-1,
        metavar="N",
        help="parallel workers per map, joblib's meaning (default: -1, all cores)",
    )
    maps.add_argument(
        "--power", type=float, default=1.0, metavar="P", help="inverse-distance power (default: 1)"
    )
    maps.add_argument("--overwrite", action="store_true", help="replace existing maps")
    maps.set_defaults(run=_run_maps)

    demo = commands.add_parser(
        "demo",
        help="run on built-in synthetic data and report the accuracy",
        description=(
            "Synthesize the star table of a 12-Mpix frame with a known offset field (drift, "
            "field rotation, barrel distortion, centroid noise), make its offset map, and "
            "report the time and the map's error against the true field."
        ),
    )
    demo.add_argument(
        "--outdir",
        default="astro-offsets-demo",
        metavar="DIR",
        help="output directory (default: ./astro-offsets-demo)",
    )
    demo.add_argument(
        "--jobs",
        type=_jobs,
        default=-1,
        metavar="N",
        help="parallel workers, joblib's meaning (default: -1, all cores)",
    )
    demo.set_defaults(run=_run_demo)
    return parser


def _run_demo(args, report):
    try:
        run_demo(args.outdir, n_jobs=args.jobs)
    except OSError as exc:
        report.error(args.outdir, exc)
        return 2
    return 0


def _message(path, text):
    """One line naming the file, without repeating a path the text starts with."""
    text = str(text).strip()
    text = text.splitlines()[0] if text else "unknown problem"
    return f"{path}: {text.removeprefix(f'{path}: ')}"


class _Reporter:
    """Messages on stderr that do not break the progress bar."""

    def __init__(self):
        self.failed = []

    def error(self, path, exc):
        self.failed.append(str(path))
        # Our own errors are OSError/ValueError with a complete message; the
        # type of anything else tells the user (or a bug report) more.
        text = (
            str(exc) if isinstance(exc, (OSError, ValueError)) else f"{type(exc).__name__}: {exc}"
        )
        tqdm.write(f"{PROG}: error: {_message(path, text)}", file=sys.stderr)

    def warning(self, path, warning):
        tqdm.write(f"{PROG}: warning: {_message(path, warning.message)}", file=sys.stderr)

    def note(self, text):
        tqdm.write(f"{PROG}: {text}", file=sys.stderr)


def _run_maps(args, report):
    if args.image is not None:
        try:
            shape = frame_shape(args.image)
        except Exception as exc:
            report.error(args.image, exc)
            return 2
    else:
        shape = tuple(args.shape)
    if args.outdir is not None:
        try:
            os.makedirs(args.outdir, exist_ok=True)
        except OSError as exc:
            report.error(args.outdir, exc)
            return 2

    written = skipped = 0
    claimed = {}
    for table in tqdm(args.tables, desc="maps", unit="table", disable=None, file=sys.stderr):
        out = map_path(table, args.outdir)
        key = os.path.abspath(out)
        if key in claimed:
            report.error(table, ValueError(f"same output {out} as {claimed[key]}"))
            continue
        claimed[key] = table
        if os.path.lexists(out) and not args.overwrite:
            report.note(f"skipped {table}: {out} exists (use --overwrite to replace it)")
            skipped += 1
            continue
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                model = OffsetModel.read(table, power=args.power)
                omap = model.to_map(shape, n_jobs=args.jobs)
                omap.write(out, overwrite=args.overwrite)
            except Exception as exc:
                report.error(table, exc)
                continue
            finally:
                for warning in caught:
                    report.warning(table, warning)
        written += 1

    summary = f"maps: {written} written, {skipped} skipped, {len(report.failed)} failed"
    if report.failed:
        summary += f" ({', '.join(report.failed)})"
    print(summary)
    return 1 if report.failed else 0


def main(argv=None):
    """Run the ``astro-offsets`` command line.

    Parameters
    ----------
    argv : list of str or `None`, optional
        Arguments without the program name; `None` reads `sys.argv`.

    Returns
    -------
    int
        Exit status: 0 on success, 1 if any input failed, 2 on bad usage.
    """
    args = _parser().parse_args(argv)
    report = _Reporter()
    try:
        return args.run(args, report)
    except KeyboardInterrupt:
        report.note("interrupted")
        return 130
