"""The ``astro-offsets`` command line."""

import argparse
import contextlib
import math
import os
import re
import shutil
import signal
import statistics
import sys
import traceback
import warnings
from concurrent.futures import BrokenExecutor
from types import MappingProxyType

from tqdm import tqdm

from ._utils.naming import checkpoint_path, png_path, weights_path
from .version import __version__

# The stages are imported where a command uses them, not here: ``--help``,
# ``--version`` and a mistyped option answer at once, without numpy and
# astropy (a second of imports), and each command's options are added to
# its parser only when that command is parsed (`_Command`).

__all__ = ["main"]

PROG = "astro-offsets"


# A reference with less than this fraction of the frames' stars (or flux) is poor.
_POOR = 0.25


def _argument(convert, accept, expected, refusal=None):
    """Return an argparse type: ``convert`` the text, then require ``accept(value)``.

    The error says ``expected <expected>, got '<text>'``, or ``refusal`` when
    the text converts but is not accepted.
    """

    def parse(text):
        try:
            value = convert(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from None
        if not accept(value):
            raise argparse.ArgumentTypeError(refusal or f"expected {expected}, got {text!r}")
        return value

    return parse


_positive_int = _argument(int, lambda value: value >= 1, "a positive integer")
_positive = _argument(float, lambda value: 0 < value < math.inf, "a positive number")
_non_negative = _argument(float, lambda value: 0 <= value < math.inf, "a number >= 0")
_jobs = _argument(
    int, lambda value: value != 0, "an integer", "0 jobs: use 1 for serial, -1 for all cores"
)


class _Command(argparse.ArgumentParser):
    """A command's parser, whose options are added when it is first used.

    ``options(parser)`` adds them: when the command is parsed, or its help
    or usage shown. The top-level ``--help`` and ``--version`` so need none
    of the stages the options come from.
    """

    def __init__(self, *args, options=None, **kwargs):
        super().__init__(*args, **kwargs)
        self._options = options

    def complete(self):
        """Add the command's options, once."""
        options, self._options = self._options, None
        if options is not None:
            options(self)
        return self

    def parse_known_args(self, args=None, namespace=None):
        self.complete()
        return super().parse_known_args(args, namespace)

    def format_usage(self):
        self.complete()
        return super().format_usage()

    def format_help(self):
        self.complete()
        return super().format_help()


def _parser(complete=True):
    """Return the parser and the commands' parsers, by name.

    With ``complete=False`` each command's options are added when first
    needed (`_Command`), as `main` does.
    """
    parser = argparse.ArgumentParser(
        prog=PROG,
        description=(
            "Drizzle-stack an image sequence through a dense per-pixel offset map per frame: "
            "star tables (tables), their offset maps (maps), then the stack (stack)."
        ),
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    _add_debug(parser, False)
    commands = parser.add_subparsers(
        dest="command",
        required=True,
        metavar="COMMAND",
        help="in the order of the pipeline:",
        parser_class=_Command,
    )
    # In the order of the pipeline: frames -> star tables -> maps -> stack.
    subparsers = {
        name: commands.add_parser(name, help=summary, description=description, options=add)
        for name, (summary, description, add, _) in _COMMANDS.items()
    }
    for name, subparser in subparsers.items():
        subparser.set_defaults(run=_COMMANDS[name][3])
        _add_debug(subparser, argparse.SUPPRESS)  # after the command too
        if complete:
            subparser.complete()
    return parser, subparsers


def _add_debug(parser, default):
    """Add ``--debug``: a command's own defaults to ``SUPPRESS``, to keep the global one."""
    parser.add_argument(
        "--debug",
        action="store_true",
        default=default,
        help="show each failure's traceback, not only its one-line message",
    )


def _add_frames(parser):
    parser.add_argument(
        "frames", nargs="+", metavar="FRAME", help="frames: camera raw files or FITS images"
    )


def _add_outdir(parser, beside, default=None):
    where = f"./{default}" if default else f"beside each {beside}"
    parser.add_argument(
        "--outdir",
        default=default,
        metavar="DIR",
        help=f"output directory (created if missing); default: {where}",
    )


def _add_jobs(parser, what):
    parser.add_argument(
        "--jobs",
        type=_jobs,
        default=-1,
        metavar="N",
        help=f"parallel workers{what}, joblib's meaning (default: -1, all cores)",
    )


def _add_calibration(parser):
    from .frames import KINDS

    group = parser.add_argument_group(
        "calibration frames",
        "files or folders of them; their masters are made once and kept beside them",
    )
    for kind in KINDS:
        group.add_argument(f"--{kind}", metavar="PATH", nargs="+", help=f"{kind} frames")


def _calibration(args, report):
    """Return the masters of the calibration frames given, `None` if none, or `False` on error."""
    from ._utils.batch import describe
    from .frames import KINDS, Calibration

    sources = {kind: getattr(args, kind) for kind in KINDS if getattr(args, kind)}
    if not sources:
        return None
    # One path is a file or a folder; several are the frames themselves.
    sources = {kind: paths[0] if len(paths) == 1 else paths for kind, paths in sources.items()}
    try:
        return Calibration.from_files(**sources)
    except (OSError, ValueError) as exc:
        report.show_traceback(exc)
        report.usage(describe("calibration", exc).removeprefix("calibration: "))
        return False


def _add_scheduler(parser, how):
    parser.add_argument(
        "--scheduler",
        metavar="ADDRESS",
        help=f"run on the dask cluster at this scheduler address, {how} (needs the dask "
        "extra); its workers open the files at the same paths, on a shared "
        "filesystem",
    )


def _add_overwrite(parser, what):
    parser.add_argument("--overwrite", action="store_true", help=f"replace existing {what}")


def _add_tables(tables):
    """Add the options of ``tables``."""
    _add_frames(tables)
    tables.add_argument(
        "--reference", required=True, metavar="FRAME", help="the reference frame (gets no table)"
    )
    _add_outdir(tables, "frame")
    _add_star_options(tables)
    _add_jobs(tables, ", frames searched at once")
    tables.add_argument(
        "--complete", action="store_true", help="keep only the stars matched in every frame"
    )
    _add_calibration(tables)
    _add_overwrite(tables, "tables")
    _add_scheduler(tables, "one task per frame")


def _add_maps(maps):
    """Add the options of ``maps``."""
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
    _add_outdir(maps, "table")
    _add_jobs(maps, " per map")
    _add_field_options(maps)
    maps.add_argument(
        "--cv",
        action="store_true",
        help="cross-validate each map's field and record its CV RMS (auto always does)",
    )
    _add_overwrite(maps, "maps")
    maps.add_argument(
        "--plot",
        action="store_true",
        help="also plot each map, its jumps and its stars to <stem>.offsets.png",
    )
    maps.add_argument(
        "--sip",
        action="store_true",
        help="also write each map as SIP polynomials to <stem>.sip.fits, a header-only FITS "
        "that DS9, Siril and ASTAP read (the error reached in SIPERR, px)",
    )
    _add_scheduler(maps, "one task per star table")


def _add_stack(stack):
    """Add the options of ``stack``."""
    _add_frames(stack)
    stack.add_argument("--out", required=True, metavar="FILE", help="output FITS file")
    stack.add_argument(
        "--maps", metavar="DIR", help="directory of the maps (default: beside each frame)"
    )
    stack.add_argument(
        "--reference",
        metavar="FRAME",
        help="the reference frame (default: the frame the maps were made against, or else "
        "the one frame without a map)",
    )
    _add_stack_options(stack)
    _add_selection(stack)
    _add_overwrite(stack, "outputs")


def _add_run(run):
    """Add the options of ``run``."""
    _add_frames(run)
    run.add_argument("--out", required=True, metavar="FILE", help="output FITS file")
    run.add_argument(
        "--reference", metavar="FRAME", help="the reference frame (default: the first frame)"
    )
    run.add_argument(
        "--tables", metavar="DIR", help="directory of the star tables (default: beside each frame)"
    )
    run.add_argument(
        "--write-maps",
        nargs="?",
        const=True,
        metavar="DIR",
        help="also write each frame's map <stem>.offsets.fits, beside the frame or in DIR",
    )
    run.add_argument(
        "--sip",
        action="store_true",
        help="with --write-maps: also write each map as SIP polynomials to <stem>.sip.fits",
    )
    stars = run.add_argument_group("stars", "as for tables")
    _add_star_options(stars)
    field = run.add_argument_group("field", "as for maps")
    _add_field_options(field)
    _add_stack_options(run)
    _add_selection(run)
    _add_overwrite(run, "outputs")


def _add_star_options(parser):
    """Add the options of the stars' detection and of their tables (`make_tables`)."""
    parser.add_argument(
        "--fwhm",
        type=_positive,
        metavar="F",
        help="stars' FWHM in pixels (default: estimated on each frame)",
    )
    parser.add_argument(
        "--threshold",
        type=_positive,
        default=5.0,
        metavar="T",
        help="detection threshold in background sigma (default: 5)",
    )
    parser.add_argument(
        "--min-snr",
        type=_non_negative,
        default=10.0,
        metavar="S",
        help="keep in the tables only stars with at least this signal-to-noise ratio "
        "(default: 10; all stars still help to match)",
    )
    parser.add_argument(
        "--keep-flagged",
        dest="flagged",
        action="store_true",
        help="keep blended, extended and edge stars in the tables too",
    )


def _add_field_options(parser):
    """Add the options of the field (`OffsetModel`): method, trend, parameter, clipping."""
    from .field import CHOICES, DEFAULT_TREND, MAPS_METHOD, METHODS, TRENDS

    parser.add_argument(
        "--method",
        choices=(*METHODS, "auto"),
        default=MAPS_METHOD,
        help=(
            "the field on the trend: quadrant interpolation, a fitted polynomial or thin-plate "
            "spline, or auto (default): the one with the lowest cross-validated residual at "
            "the stars"
        ),
    )
    parser.add_argument(
        "--choose",
        choices=CHOICES,
        default=CHOICES[0],
        help=(
            "auto: choose the field once, on the first table, and re-check it on each other "
            "table's stars (sequence, the default), or choose it on every table (frame)"
        ),
    )
    parser.add_argument(
        "--trend",
        choices=(*TRENDS, "none"),
        default=DEFAULT_TREND,
        help=(
            f"the global transform fitted to the stars, under the field (default: {DEFAULT_TREND}: "
            "rotation, meridian flip, scale, shear); none: the field of the raw offsets"
        ),
    )
    # Each method's parameter, from the methods themselves.
    for method in METHODS.values():
        parser.add_argument(
            f"--{method.parameter}",
            type=method.convert,
            metavar=method.parameter[0].upper(),
            help=method.summary,
        )
    clipping = parser.add_mutually_exclusive_group()
    clipping.add_argument(
        "--clip",
        type=_positive,
        default=3.0,
        metavar="SIGMA",
        help="fitted fields: reject stars beyond SIGMA robust sigmas (default: 3)",
    )
    clipping.add_argument(
        "--no-clip", dest="clip", action="store_const", const=None, help="keep every star"
    )
    parser.add_argument(
        "--no-compress",
        dest="compress",
        action="store_false",
        help="write the maps as plain float32 images (default: tile-compressed, 5 to 15 times "
        "smaller, within 0.001 px of the map at every pixel; run stacks its maps as they would "
        "be written either way)",
    )


def _add_stack_options(parser):
    """Add the options of the stack (`stack_frames`): drizzle, rejection, checkpoints, jobs."""
    from .stack import KERNELS, LAYOUTS

    parser.add_argument(
        "--kernel",
        default="auto",
        choices=KERNELS,
        help="drizzle kernel (default: auto, per frame turbo where its map turns the pixels "
        "by less than half a degree beyond a quarter turn, else square)",
    )
    parser.add_argument(
        "--pixfrac",
        type=float,
        default=1.0,
        metavar="F",
        help="drop size as a fraction of an input pixel, in (0, 1] (default: 1)",
    )
    parser.add_argument(
        "--scale",
        type=float,
        default=1.0,
        metavar="S",
        help="output pixels per input pixel along each axis (default: 1; 2 "
        "for a grid twice as fine)",
    )
    for flag, dest, what in (
        ("--no-exposure-weighting", "exposure_weighting", "weigh every frame alike"),
        ("--no-preview", "preview", "do not write the PNG preview"),
        ("--keep-hot-pixels", "mask_hot_pixels", "do not mask the frames' hot pixels"),
        ("--no-normalize", "normalize", "stack the frames as they are, not normalised"),
    ):
        parser.add_argument(flag, dest=dest, action="store_false", help=what)
    parser.add_argument(
        "--no-reject",
        dest="reject",
        action="store_const",
        const=False,
        help="keep outliers (default: rejected with 3 frames or more)",
    )
    parser.add_argument(
        "--write-masks",
        nargs="?",
        const=True,
        metavar="DIR",
        dest="masks",
        help="write each frame's outlier mask <stem>.outliers.fits, beside the frame or in DIR",
    )
    parser.add_argument(
        "--scratch",
        metavar="DIR",
        help="directory of the scratch files (default: the system's temporary directory)",
    )
    parser.add_argument(
        "--checkpoint-every",
        type=int,
        default=10,
        metavar="N",
        help="save the stack so far every N frames in the checkpoint directory <out "
        "stem>.checkpoint, beside the output, where rejection also keeps every frame "
        "(8 bytes a pixel); removed once the stack is written (default: 10; 0: no "
        "checkpoint, rejection's frames go to --scratch)",
    )
    parser.add_argument(
        "--resume",
        action="store_true",
        help="continue an interrupted stack from its checkpoint (the same frames and options)",
    )
    _add_calibration(parser)
    _add_jobs(parser, " that drizzle (the stack is the same for any number)")
    _add_scheduler(parser, "the frames kept and drizzled alone, a share of them stacked per worker")
    parser.add_argument(
        "--context",
        action="store_true",
        help="also write the context arrays (which frames reached each pixel)",
    )
    parser.add_argument(
        "--layout",
        choices=LAYOUTS,
        help="how the stack is written: image, the file's one image (for colour a cube of 3 "
        "planes, red, green, blue), which Siril and PixInsight open, its weights and contexts "
        "in <out stem>.weights.fits; extensions, the image extensions SCI (or RED, GREEN, "
        "BLUE), their weights WHT (RED_WHT, ...) and contexts in one file (default: image "
        "for colour, extensions for mono)",
    )


def _margin(text):
    """Parse a selection option's value: a number, or ``off`` (`None`)."""
    if text.strip().lower() in ("off", "none"):
        return None
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"a number or off, not {text!r}") from None


def _add_selection(stack):
    """Add the frame selection and weighting options of ``stack`` (see `stack_frames`)."""
    from .stack._quality import FILTER_FWHM, FILTER_ROUND, FILTER_STARS, WEIGHTINGS

    group = stack.add_argument_group(
        "frame selection and weighting",
        "Frames far outside the sequence's bulk are left out (with 3 frames or more; never "
        "the reference), and the others weighted by their noise; the report <out "
        "stem>.frames.ecsv and its picture <out stem>.frames.png list every frame.",
    )
    group.add_argument(
        "--no-select",
        dest="select",
        action="store_false",
        help="stack every frame, whatever its stars (the --filter-* and --keep-best tests off)",
    )
    for flag, what, default in (
        ("--filter-fwhm", "FWHM", FILTER_FWHM),
        ("--filter-round", "elongation", FILTER_ROUND),
    ):
        group.add_argument(
            flag,
            type=_margin,
            default=default,
            metavar="K",
            help=f"leave out frames whose stars' {what} is beyond the median by more than K "
            f"robust sigmas and a quarter of the median (default: {default:g}; off: no test)",
        )
    group.add_argument(
        "--filter-stars",
        type=_margin,
        default=FILTER_STARS,
        metavar="F",
        help="leave out frames that detected fewer stars than F times the median "
        f"(default: {FILTER_STARS:g}; off: no test)",
    )
    group.add_argument(
        "--keep-best",
        type=_margin,
        metavar="PERCENT",
        help="keep only the best PERCENT %% of the frames, those of the least FWHM",
    )
    group.add_argument(
        "--weight",
        choices=WEIGHTINGS,
        default=WEIGHTINGS[0],
        dest="weighting",
        help="noise: weight each frame by the inverse variance of its noise after "
        "normalisation (default); none: by its exposure time alone",
    )


def _percent(fraction):
    """Return a fraction as a percentage of two figures, whole from 10 %.

    >>> [_percent(f) for f in (0.0398, 0.00005, 0.123, 0.995, 1.0)]
    ['4.0%', '0.0050%', '12%', '100%', '100%']
    """
    percent = 100 * fraction
    return f"{percent:.0f}%" if percent >= 9.95 else f"{percent:#.2g}%"


def _stack_notes(stack, results):
    """Yield the lines that say how the frames were normalised and what was rejected."""
    stacked = [r for r in results if r.status == "stacked"]
    scales = [r.scale for r in stacked if r.scale is not None]
    if scales and (min(scales) != 1 or max(scales) != 1):
        yield (f"normalised to the reference: flux scales {min(scales):.4g} to {max(scales):.4g}")
    masked = [(r.masked, r.path) for r in stacked if r.masked is not None]
    if masked and max(masked)[0] > 0:
        mean = sum(m for m, _ in masked) / len(masked)
        most, path = max(masked)
        yield (
            f"outliers: {_percent(mean)} of the pixels rejected on average, "
            f"{_percent(most)} at most ({path})"
        )
    elif masked:
        yield "outliers: none found"
    elif stack.meta.get("rejected") is False and len(stacked) < 3:
        yield f"outliers: kept ({len(stacked)} frames; rejection needs 3 or more)"


def _poor_reference(results):
    """Return a warning when the reference is far poorer than the frames, or `None`.

    A capped, clouded or dewed reference: far fewer stars than the frames
    (star tables), or frames far brighter than it (a stack's flux scales).
    """
    median = statistics.median
    reference = next((r for r in results if r.status == "reference"), None)
    found = [r.detected for r in results if r.status == "written" and r.detected]
    if reference is not None and found and (reference.detected or 0) < _POOR * median(found):
        return (
            f"the reference {reference.path} has {reference.detected or 0} stars where the "
            f"frames have {median(found):.0f} (median): a capped, clouded or dewed "
            "reference matches few stars; choose a clear frame with --reference"
        )
    scales = [r.scale for r in results if r.status == "stacked" and r.scale not in (None, 1)]
    if len(scales) > 1 and median(scales) < _POOR:
        return (
            f"the frames are {1 / median(scales):.0f} times brighter than the reference "
            f"(median flux scale {median(scales):.3g}): a capped or clouded reference "
            "dims the whole stack; choose a clear frame with --reference"
        )
    return None


def _add_demo(demo):
    """Add the options of ``demo``."""
    _add_outdir(demo, "", default="astro-offsets-demo")
    _add_jobs(demo, "")


def _given(args, *names):
    """Return the options ``names`` as parsed, for the library function of a command."""
    return {name: getattr(args, name) for name in names}


def _run_demo(args, report):
    try:
        from ._demo import run_demo  # and the synthetic data with it: only here

        run_demo(args.outdir, n_jobs=args.jobs)
    except OSError as exc:
        report.error(args.outdir, exc)
        return 2
    return 0


# The library names an option both ways, Python's first: "(scratch=,
# --scratch)", "(reject=False, --no-reject)". The command line says its own.
_BOTH_WAYS = re.compile(r"\((?:[a-z_]+=[^,;()]*), (--[^()]*)\)")


def _as_options(text):
    """Return a message of the library in the command line's terms.

    >>> _as_options("give another directory (scratch=, --scratch)")
    'give another directory (--scratch)'
    """
    return _BOTH_WAYS.sub(r"(\1)", str(text))


# Inputs left out that are not ours: frames given to maps.
_FRAME = "frame"


class _Reporter:
    """Messages on stderr, one line each, that do not break the progress bar."""

    def __init__(self):
        self.failed = []
        self.ignored = {}
        self.created = []  # directories made for this run, deepest first
        self.debug = False  # --debug: each failure's traceback, before its line

    def show_traceback(self, problem):
        """With ``--debug``, write the traceback of ``problem`` (an exception or a `Failure`)."""
        if not self.debug:
            return
        if isinstance(problem, BaseException) and problem.__traceback__ is not None:
            text = "".join(traceback.format_exception(problem))
        else:
            text = getattr(problem, "traceback", "")
        if text:
            tqdm.write(text.rstrip("\n"), file=sys.stderr)

    def error(self, path, problem):
        from ._utils.batch import describe

        self.failed.append(str(path))
        message = describe(path, problem)
        self.show_traceback(message)
        self.note(f"error: {message}")

    def note(self, text):
        """Write a line on stderr, in the command line's terms (`_as_options`)."""
        tqdm.write(f"{PROG}: {_as_options(text)}", file=sys.stderr)

    def make_directory(self, directory):
        """Create a directory if missing; report it and return `False` if that is impossible.

        Directories made here and left empty by the run are removed at its end
        (`tidy`): a run that wrote nothing leaves nothing behind.
        """
        if not directory:
            return True
        missing = []
        parent = os.path.abspath(directory)
        while not os.path.exists(parent):
            missing.append(parent)
            parent = os.path.dirname(parent)
        if not os.path.isdir(parent):
            self.error(directory, OSError(f"{parent} is a file, not a directory"))
            return False
        try:
            os.makedirs(directory, exist_ok=True)
        except OSError as exc:
            self.error(directory, exc)
            return False
        self.created.extend(missing)
        return True

    def tidy(self):
        """Remove the directories made for this run that it left empty."""
        for directory in self.created:
            with contextlib.suppress(OSError):
                os.rmdir(directory)

    def result(self, result):
        """Report a file's result: an error, a skip, or a file left out; `True` otherwise."""
        from ._utils.provenance import product_kind

        if result.status == "failed":
            self.failed.append(result.path)
            self.show_traceback(result.message)
            self.note(f"error: {result.message}")
        elif result.status == "ignored":
            kind = product_kind(result.path) or _FRAME
            self.ignored[kind] = self.ignored.get(kind, 0) + 1
        elif result.status == "skipped":
            self.note(
                f"skipped {result.path}: {result.output} exists (use --overwrite to replace it)"
            )
        else:
            return True
        return False

    def summary(
        self, command, results, counted=("written", "skipped", "failed"), extra="", notes=None
    ):
        """Print the closing line of a run over files; return the exit status.

        Files of ours left out of the run get one line before it. ``notes``
        follow the counts of some statuses (``{status: text}``), when not 0.
        """
        from ._utils.provenance import PRODUCTS

        frames = self.ignored.pop(_FRAME, 0)
        if self.ignored:
            n = sum(self.ignored.values())
            order = [*PRODUCTS, "file"]  # in the order of the pipeline
            kinds = ", ".join(
                f"{self.ignored[kind]} {kind}{'s' if self.ignored[kind] > 1 else ''}"
                for kind in sorted(self.ignored, key=order.index)
            )
            self.note(f"skipped {n} file{'s' if n > 1 else ''} written by {PROG} ({kinds})")
        if frames:
            self.note(f"skipped {frames} frame{'s' if frames > 1 else ''}: not star tables")
        counts = {status: sum(r.status == status for r in results) for status in counted}
        notes = notes or {}
        line = f"{command}: " + ", ".join(
            f"{n} {status}{notes.get(status, '') if n else ''}" for status, n in counts.items()
        )
        if self.failed:
            line += f" ({', '.join(self.failed)})"
        print(line + extra)
        return 1 if self.failed else 0

    def usage(self, problem):
        """Report an error that concerns no one file (an option, the whole run)."""
        self.show_traceback(problem)
        self.note(f"error: {problem}")


@contextlib.contextmanager
def _scheduler(address):
    """Yield a client of the dask cluster at ``address`` (`None` for `None`), closed at the end."""
    from ._utils.workers import connected

    if address is not None:
        try:
            import distributed  # noqa: F401
        except ImportError:
            raise _MissingDependencyError(
                "--scheduler needs dask.distributed: pip install 'dask[distributed]'"
            ) from None
    with connected(address) as client:
        yield client


def _field_options(args):
    """Return the field's options as parsed (`_add_field_options`), for `OffsetModel`."""
    from .field import METHODS

    options = {
        "method": args.method,
        "clip": args.clip,
        "trend": None if args.trend == "none" else args.trend,
    }
    options.update((m.parameter, getattr(args, m.parameter)) for m in METHODS.values())
    return options


class _MissingDependencyError(Exception):
    """An optional dependency that an option needs is not installed."""


def _run_maps(args, report):
    from .field import check_options, write_maps
    from .frames import frame_shape

    if args.image is not None:
        try:
            shape = frame_shape(args.image)
        except (OSError, ValueError) as exc:
            report.error(args.image, exc)
            return 2
    else:
        shape = tuple(args.shape)
    options = _field_options(args)
    try:
        check_options(**options)
    except ValueError as exc:
        report.usage(str(exc))
        return 2
    if not report.make_directory(args.outdir):
        return 2

    def on_table(result):
        for line in result.warnings:
            report.note(f"warning: {line}")
        if report.result(result):
            tqdm.write(f"{result.output}: {result.field}")

    with _scheduler(args.scheduler) as client:
        results = write_maps(
            args.tables,
            shape,
            n_jobs=args.jobs,
            client=client,
            progress=True,
            callback=on_table,
            **_given(args, "outdir", "overwrite", "plot", "sip", "cv", "choose", "compress"),
            **options,
        )
    if all(result.status == "ignored" for result in results):  # frames, other products
        report.usage(
            f"no star table among the {len(results)} inputs: maps takes the star tables that "
            "tables writes (<frame>.offsets_table.fits)"
        )
        return 2
    return report.summary("maps", results)


def _stars(result):
    """Return the stars of a frame in `make_tables`, in words."""
    if result.status == "reference":
        found = f": {result.detected} stars detected" if result.detected else ""
        return f"{result.path} (reference){found}"
    replaced = (
        ""
        if result.replaced is None
        else f"; replaced its table made against another reference ({result.replaced})"
    )
    return (
        f"{result.path}: {result.detected} stars detected, {result.matched} matched "
        f"to the reference ({result.kept} kept in the table), {result.outside} outside "
        f"the reference frame, {result.unmatched} unmatched{replaced}"
    )


def _run_tables(args, report):
    from ._utils.workers import ClusterError
    from .stars import make_tables

    calibration = _calibration(args, report)
    if calibration is False or not report.make_directory(args.outdir):
        return 2

    def on_frame(result):
        if report.result(result):
            tqdm.write(_stars(result))

    options = _given(
        args, "outdir", "fwhm", "threshold", "min_snr", "flagged", "complete", "overwrite"
    )
    try:
        with _scheduler(args.scheduler) as client:
            results = make_tables(
                args.frames,
                args.reference,
                progress=True,
                callback=on_frame,
                n_jobs=args.jobs,
                client=client,
                calibration=calibration,
                **options,
            )
    except ClusterError:
        raise  # not the reference's: reported by main
    except (OSError, ValueError) as exc:
        report.error(args.reference, exc)
        return 2
    if poor := _poor_reference(results):
        report.note(f"warning: {poor}")
    return report.summary("tables", results)


def _run_stack(args, report):
    from .stack import check_frames, stack_frames

    def check():
        return check_frames(args.frames, **_given(args, "maps", "reference"))

    def stack(**common):
        return stack_frames(args.frames, **_given(args, "maps", "reference"), **common)

    return _stacking(args, report, "stack", check, stack)


def _run_run(args, report):
    from .field import check_options
    from .pipeline import run_sequence

    field = _field_options(args)
    try:
        check_options(**field)
    except ValueError as exc:
        report.usage(str(exc))
        return 2
    if args.sip and args.write_maps is None:
        report.usage("--sip needs --write-maps (the SIP files go beside the maps)")
        return 2
    for directory in (args.tables, args.write_maps):
        if directory not in (None, True) and not report.make_directory(directory):
            return 2

    def check():
        return [r for r in map(_missing, args.frames) if r is not None]

    def stack(**common):
        return run_sequence(
            args.frames,
            args.reference,
            tables=args.tables,
            write_maps=args.write_maps,
            sip=args.sip,
            compress_maps=args.compress,
            stars=_given(args, "fwhm", "threshold", "min_snr", "flagged"),
            field=field,
            choose=args.choose,
            **common,
        )

    return _stacking(args, report, "run", check, stack)


def _an_input(args, paths):
    """Return ``(path, what)`` for the first of ``paths`` that is an input, or `None`.

    Products of astro-offsets among the frames (a stack of an earlier run
    that ``light_*.fits`` matches) are no inputs: they are left out.
    """
    from ._utils.provenance import product_kind
    from .frames import KINDS

    inputs = [(path, "one of the frames to stack") for path in args.frames]
    inputs += [(args.reference, "the reference frame")] if args.reference else []
    for kind in KINDS:
        inputs += [(path, f"one of the {kind} frames") for path in getattr(args, kind) or ()]
    for path in paths:
        for given, what in inputs:
            with contextlib.suppress(OSError):
                if os.path.samefile(path, given) and product_kind(path) is None:
                    return path, what
    return None


def _missing(frame):
    """Return the failed `StackResult` of a frame file that cannot be read, or `None`."""
    from ._utils.batch import describe
    from ._utils.validation import input_file
    from .stack import StackResult

    try:
        input_file(frame, "frame file")
    except (OSError, ValueError) as exc:
        return StackResult(path=frame, status="failed", message=describe(frame, exc))
    return None


def _listed(names):
    """Return names as a sentence lists them: ``a``, ``a and b``, ``a, b and c``."""
    return " and ".join([", ".join(names[:-1]), names[-1]] if len(names) > 1 else names)


def _resume(args):
    """Return ``"; its checkpoint is kept in <dir> (--resume continues it)"``, or ``""``."""
    from .stack._checkpoint import Checkpoint

    kept = checkpoint_path(args.out)
    if args.checkpoint_every > 0 and Checkpoint.found(kept):
        return f"; its checkpoint is kept in {kept} (--resume continues it)"
    return ""


def _stacking(args, report, command, check, stack_function):
    """Run a command that stacks (``stack``, ``run``) and write its outputs.

    ``check()`` returns the failed results of the inputs, checked without
    stacking (when the output is kept); ``stack_function(**common)`` stacks,
    with the options common to both commands, and returns the stack and the
    results.
    """
    from ._utils.provenance import product_kind
    from ._utils.workers import ClusterError
    from .stack import check_stack_options
    from .stack._checkpoint import Checkpoint
    from .stack._quality import check_selection
    from .stack._report import frame_report, report_paths, write_frame_report
    from .stack._stacker import DrizzleError

    options = _given(args, "kernel", "pixfrac", "scale", "exposure_weighting", "context")
    selection = _given(
        args, "select", "filter_fwhm", "filter_round", "filter_stars", "keep_best", "weighting"
    )
    try:
        check_stack_options(**options)
        check_selection(**selection)
    except ValueError as exc:
        report.usage(exc)
        return 2
    calibration = _calibration(args, report)
    if calibration is False:
        return 2
    preview = png_path(args.out)
    frames_report = report_paths(args.out)
    # The weights file of the image layout: a colour stack's by default
    # (whether the stack is colour is known once it is made).
    weights = weights_path(args.out) if args.layout != "extensions" else None
    outputs = tuple(path for path in (args.out, weights) if path)
    outputs += (preview,) if args.preview else ()
    outputs += frames_report
    kept = [path for path in outputs if os.path.lexists(path)]
    # An input is never replaced, nor a file that is not ours: --overwrite
    # replaces astro-offsets' own outputs only, as tables and maps do.
    clash = _an_input(args, kept)
    if clash is not None:
        report.usage(
            f"{clash[0]}: is {clash[1]}; the stack's outputs would replace it: choose another --out"
        )
        return 2
    theirs = [path for path in kept if product_kind(path) is None]
    if theirs:
        report.usage(
            f"{theirs[0]}: exists and was not written by astro-offsets, which replaces only its "
            "own files (--overwrite too): move it, or choose another --out"
        )
        return 2
    if os.path.lexists(args.out) and not args.overwrite:
        # As tables and maps keep theirs: a rerun does no harm and no work;
        # but the inputs are checked first, and a bad one fails the run.
        try:
            failed = check()
        except ValueError as exc:
            report.usage(exc)
            return 2
        for result in failed:
            report.result(result)
        them = "them" if len(kept) > 1 else "it"
        print(
            f"{command}: kept {_listed(kept)} (use --overwrite to replace {them}); nothing stacked"
        )
        return 1 if failed else 0
    # The preview and the report of a stack since removed are remade with it.
    # The weights file is the stack's own, and kept as the stack is.
    if weights in kept and not args.overwrite:
        report.usage(
            f"{weights}: exists, the weights of a stack since removed; move it, or replace it "
            "with --overwrite"
        )
        return 2
    # An interrupted stack's checkpoint: continued, or replaced on request.
    interrupted = checkpoint_path(args.out)
    if not args.resume and Checkpoint.found(interrupted):
        if args.overwrite:
            Checkpoint.discard(interrupted)
            report.note(
                f"removed {interrupted}, the checkpoint of an interrupted stack (--overwrite)"
            )
        elif args.checkpoint_every > 0:  # else not used, and kept
            report.usage(
                f"{interrupted}: the checkpoint of an interrupted stack is there: continue it "
                "with --resume, or start over with --overwrite"
            )
            return 2
    if not report.make_directory(os.path.dirname(args.out)):
        return 2

    def on_frame(result):
        for line in result.warnings:
            report.note(f"warning: {line}")
        if report.result(result) and result.status == "left out":
            report.note(f"left out {result.message}")
        if getattr(result, "field", ""):  # a run's frame: its stars and field
            tqdm.write(
                f"{result.path}: {result.detected} stars detected, {result.matched} matched; "
                f"{result.field}"
            )

    with warnings.catch_warnings(record=True) as caught:
        # drizzle's own warnings (a kernel that does not conserve flux, ...)
        # become one line each, like every other message.
        warnings.simplefilter("always")
        try:
            options.update(_given(args, "mask_hot_pixels", "normalize", "reject", "masks"))
            every = args.checkpoint_every
            if every < 0 or (args.resume and every == 0):
                raise ValueError(
                    f"--checkpoint-every must be 0 (no checkpoint) or more, got {every}"
                    if every < 0
                    else "--resume needs the checkpoint: not with --checkpoint-every 0"
                )
            checkpoint = {
                "checkpoint": checkpoint_path(args.out),
                "checkpoint_every": every,
                "keep_checkpoint": True,
            }
            with _scheduler(args.scheduler) as client:
                stack, results = stack_function(
                    progress=True,
                    callback=on_frame,
                    n_jobs=args.jobs,
                    client=client,
                    calibration=calibration,
                    scratch=args.scratch,
                    resume=args.resume,
                    **(checkpoint if every > 0 else {}),
                    **selection,
                    **options,
                )
        except ClusterError as exc:
            # The cluster: not reached, or its workers cannot read the files.
            report.usage(exc)
            return 2
        except FileNotFoundError as exc:
            # The reference frame of a run: none to stack against.
            report.usage(exc)
            return 2
        except BrokenExecutor as exc:
            # A worker killed (out of memory, or by hand): what it held is lost.
            report.show_traceback(exc)
            report.usage(f"a worker process died (out of memory, or killed){_resume(args)}")
            return 1
        except KeyboardInterrupt:
            report.note(f"interrupted{_resume(args)}")
            return 130
        except DrizzleError as exc:
            # drizzle failed on a frame: the stack is incomplete.
            report.show_traceback(exc)
            report.usage(f"{exc}{_resume(args)}")
            return 1
        except ValueError as exc:
            # No frame stacked because every one failed: a failure of the
            # inputs, reported one by one. Otherwise the run was impossible.
            report.usage(exc)
            return 1 if report.failed else 2
    for text in dict.fromkeys(str(w.message) for w in caught):
        report.note(f"warning: {text}")
    frames = [r for r in results if r.status != "ignored"]
    if len(frames) > 1 and sum(r.status == "stacked" for r in frames) == 1:
        # The reference alone: no stack (the next run would keep it), nor checkpoint.
        _drop_checkpoint(args)
        report.usage(
            f"only the reference of the {len(frames)} frames could be stacked: no stack written"
        )
        return 1
    for line in _stack_notes(stack, results):
        print(line)
    if poor := _poor_reference(results):
        report.note(f"warning: {poor}")
    try:
        stack.write(args.out, overwrite=args.overwrite, context=args.context, layout=args.layout)
        if args.preview:
            stack.write_preview(preview, overwrite=True)
        write_frame_report(frame_report(results), frames_report[0], overwrite=True)
    except OSError as exc:
        report.error(args.out, exc)
        if resume := _resume(args):
            report.note(resume.removeprefix("; "))
        return 1
    _drop_checkpoint(args)  # written: the checkpoint has served
    weights = stack.weights_file(args.out, args.layout)
    plural = "s" if len(stack.channels) > 1 else ""
    cube = " in one cube," if plural and weights else ""
    their = "their" if plural else "its"
    contents = f"{', '.join(stack.channels)}{cube} and {their} weight{plural}"
    contents += f" and context{plural}" if args.context else ""
    written = [path for path in (args.out, weights, args.preview and preview) if path]
    wrote = f"; wrote {_listed(written)} ({contents})"
    left_out = any(result.status == "left out" for result in results)
    return report.summary(
        command,
        results,
        counted=("stacked", "left out", "failed") if left_out else ("stacked", "failed"),
        extra=wrote,
        notes={"left out": f" (see {frames_report[0]})"},
    )


def _drop_checkpoint(args):
    """Remove the stack's checkpoint (ours: refused if its folder held anything)."""
    if args.checkpoint_every > 0:
        shutil.rmtree(checkpoint_path(args.out), ignore_errors=True)


_COMMANDS = MappingProxyType(
    {
        # name: (summary, description, add its options, run it)
        "tables": (
            "find and match stars: <stem>.offsets_table.fits per frame",
            "Detect stars in the reference frame and in every frame (background removed, "
            "FWHM estimated on each frame unless given; colour raw frames through 2 x 2 "
            "super-pixels), match each frame's stars to the reference's directly (triangles of "
            "bright stars, a vote, then nearest neighbours), and write <stem>.offsets_table.fits "
            "per frame with xcentroid, ycentroid, xoffset, yoffset, ref_id, x_ref, y_ref, flux and "
            "snr. An existing table made against another reference is remade.",
            _add_tables,
            _run_tables,
        ),
        "maps": (
            "write an offset map <stem>.offsets.fits for each star table",
            "Write one offset map per star table: <stem>.offsets.fits, where <stem> is "
            "the table's name without its .offsets_table[_clean].<ext> ending. An existing "
            "map is kept unless --overwrite.",
            _add_maps,
            _run_maps,
        ),
        "stack": (
            "drizzle frames onto the reference grid with their offset maps",
            "Drizzle the frames onto the reference frame's grid, each moved by its map "
            "<stem>.offsets.fits (beside the frame, or in --maps); the reference (the frame "
            "the maps were made against, or else the one frame without a map) stacks "
            "unmoved. Raw files and FITS mosaics with a BAYERPAT card give a colour stack (Bayer "
            "drizzle: one cube of red, green and blue planes, its weights in <out "
            "stem>.weights.fits, see --layout), as do FITS cubes of 3 planes (red, green, blue); "
            "other FITS files a mono one (SCI, WHT). "
            "Each frame is first calibrated (--bias, --dark, --flat) and normalised to the "
            "reference (its stars' flux scale, its sky level); with 3 frames or more, outliers "
            "(satellite and aircraft trails, cosmic rays) are found against the median of all "
            "frames and left out. A PNG preview is written beside the output.",
            _add_stack,
            _run_stack,
        ),
        "run": (
            "the whole sequence in one run: star tables, fields and stack",
            "Take the frames from stars to stack in one process, each frame read once: its "
            "stars found and matched to the reference's, its star table written "
            "(<stem>.offsets_table.fits, beside the frame or in --tables), its field fitted and "
            "its map made in memory (written only with --write-maps), and the frame drizzled "
            "onto the reference grid, as tables, maps and stack do one after the other, with "
            "the same options and the same stack.",
            _add_run,
            _run_run,
        ),
        "demo": (
            "run the whole pipeline on a built-in synthetic raw sequence",
            "Write five synthetic raw frames (DNG: a Bayer mosaic of 900 coloured stars, sky, "
            "noise and hot pixels) moved by a known drift, field rotation and lens distortion; "
            "take them through star tables, offset maps (--method auto, with a plot of the "
            "last) and a Bayer drizzle stack (stack.fits, its weights stack.weights.fits, and "
            "stack.png), as the other commands would; and report the time of each step and "
            "the maps' error against the true motion.",
            _add_demo,
            _run_demo,
        ),
    }
)


def _missing_option_path(args):
    """Return a line naming an option whose file or folder does not exist, or `None`."""
    from .frames import KINDS

    named = [("reference", getattr(args, "reference", None))]
    named += [(kind, path) for kind in KINDS for path in getattr(args, kind, None) or ()]
    for option, path in named:
        if path is not None and not os.path.exists(path):
            return f"--{option} {path}: no such file or folder"
    return None


def _run(args, report):
    """Run the command parsed; return its exit status."""
    from ._utils.workers import ClusterError, interrupted_here

    missing = _missing_option_path(args)
    if missing is not None:
        report.usage(missing)
        return 2
    try:
        with interrupted_here():
            return args.run(args, report)
    except (_MissingDependencyError, ClusterError) as exc:
        report.usage(exc)
        return 2
    except MemoryError as exc:
        # The run's problem, not a file's (`describe` raises it again): it stops here.
        report.show_traceback(exc)
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        said = ["out of memory" + (f" ({detail})" if detail else ""), "try fewer --jobs"]
        report.note(f"error: {'; '.join([*said, *getattr(exc, '__notes__', ())])}")
        return 1


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
    report = _Reporter()
    try:
        parser, subparsers = _parser(complete=False)
        args, unknown = parser.parse_known_args(argv)
        if unknown:
            # The command's own usage, not the top-level one, for a mistyped option.
            subparsers[args.command].error(f"unrecognized arguments: {' '.join(unknown)}")
        report.debug = args.debug
        return _run(args, report)
    except KeyboardInterrupt:
        report.note("interrupted")
        return 130
    finally:
        report.tidy()
        if argv is None:
            # The program's own run (the console script) is over: a Ctrl-C
            # while the interpreter exits would only add a traceback.
            signal.signal(signal.SIGINT, signal.SIG_IGN)


if __name__ == "__main__":
    sys.exit(main())
