"""The report of a stack's frames: a table (ECSV) and its picture (PNG), one row a frame."""

import math
import os
import textwrap
from types import MappingProxyType

import numpy as np
from astropy.table import MaskedColumn, Table

from .._utils.atomic import atomic_path
from .._utils.naming import product_root
from .._utils.provenance import png_metadata, provenance_cards
from ._quality import MEASURES

__all__ = ["frame_report", "report_paths", "write_frame_report"]

_UNITS = MappingProxyType({"fwhm": "pix", "residual": "pix"})
_DESCRIPTIONS = MappingProxyType(
    {
        "frame": "the frame, as given",
        "used": "whether it went into the stack",
        "weight": "its weight in the stack, the reference frame's being 1 (0 if unused)",
        "fwhm": "the median FWHM of its stars (its map's FWHM)",
        "elongation": "the median elongation a/b of its stars (ELONG)",
        "n_stars": "stars detected in it (NDETECT)",
        "sky": "its sky level, before normalisation",
        "noise": "its pixel noise, before normalisation",
        "flux_scale": "the reference's star fluxes over its own (the normalisation's scale)",
        "residual": "RMS of its stars about its registration (TRENDRMS, else STARRMS, else CVRMS)",
        "status": "stacked, left out or failed",
        "reason": "why it is not in the stack; empty if it is",
    }
)


def report_paths(out):
    """Return the report's table and picture beside a stack: ``<stem>.frames.ecsv``, ``.png``.

    Examples
    --------
    >>> from astro_offsets.stack._report import report_paths
    >>> report_paths("out/stack.fits")
    ('out/stack.frames.ecsv', 'out/stack.frames.png')
    """
    root = product_root(out)
    return f"{root}.frames.ecsv", f"{root}.frames.png"


def frame_report(results):
    """Return the report of a stack's frames, one row per `StackResult`, in their order.

    Columns: ``frame``, ``used``, ``weight`` (relative to the reference
    frame's, 0 if unused), the measures (``fwhm``, ``elongation``,
    ``n_stars``, ``sky``, ``noise``, ``flux_scale``, ``residual``; NaN,
    or masked for ``n_stars``, where unmeasured), ``status`` and ``reason``
    (the message of a frame left out or failed, without its path; empty if
    used). Inputs that are files of ours, not frames (status
    ``"ignored"``), have no row.

    Examples
    --------
    >>> from astro_offsets import StackResult
    >>> from astro_offsets.stack._report import frame_report
    >>> table = frame_report([
    ...     StackResult(path="a.fits", status="stacked", weight=1.0),
    ...     StackResult(path="b.fits", status="failed", message="b.fits: no such file")])
    >>> table["used"].tolist(), table["reason"].tolist()
    ([True, False], ['', 'no such file'])
    """
    rows = []
    # Files of ours among the inputs (tables, maps: "ignored") are no frames.
    for result in (r for r in results if r.status != "ignored"):
        used = result.status == "stacked"
        measures = result.measures or {}
        weight = result.weight if result.weight is not None else 1.0
        reason = "" if used else result.message.removeprefix(f"{result.path}: ")
        rows.append(
            (
                result.path,
                used,
                _float(weight) if used else 0.0,
                *(_float(measures.get(key)) for key in MEASURES),
                result.status,
                reason,
            )
        )
    names = ("frame", "used", "weight", *MEASURES, "status", "reason")
    dtypes = (str, bool, float, *(float for _ in MEASURES), str, str)
    table = Table(rows=rows or None, names=names, dtype=dtypes)
    # A count, missing (masked) where unmeasured.
    counts = np.asarray(table["n_stars"], float)
    missing = ~np.isfinite(counts)
    table["n_stars"] = MaskedColumn(np.where(missing, 0, counts).astype(int), mask=missing)
    for name in names:
        table[name].description = _DESCRIPTIONS[name]
        if name in _UNITS:
            table[name].unit = _UNITS[name]
    table.meta.update({key.lower(): value for key, value, _ in provenance_cards("frame report")})
    return table


def _float(value):
    """Return a measure as a float of 6 significant figures (NaN if none)."""
    try:
        return float(f"{float(value):.6g}")
    except (TypeError, ValueError):
        return math.nan


def write_frame_report(table, path, *, overwrite=False, picture=True):
    """Write a stack's frame report (`frame_report`) as ECSV, and its picture beside it.

    Both atomically; the picture (``<stem>.png`` of ``path``, see
    `plot_frame_report`) unless ``picture`` is `False`.

    Raises
    ------
    OSError
        If a file exists and ``overwrite`` is `False`, or cannot be written.
    """
    with atomic_path(path, overwrite=overwrite) as tmp:
        table.write(tmp, format="ascii.ecsv")
    if picture:
        from matplotlib.backends.backend_agg import FigureCanvasAgg

        figure = plot_frame_report(table)
        FigureCanvasAgg(figure)
        png = os.path.splitext(os.fspath(path))[0] + ".png"
        with atomic_path(png, overwrite=overwrite) as tmp:
            figure.savefig(tmp, format="png", dpi=80, metadata=png_metadata("frame plot"))


def plot_frame_report(table):
    """Plot a frame report: per frame, FWHM, elongation, stars, normalised noise and weight.

    Frames left out or failed are marked (red crosses) and listed with
    their reason below.
    """
    from matplotlib.figure import Figure

    panels = (
        ("fwhm", "FWHM (px)"),
        ("elongation", "elongation"),
        ("n_stars", "stars detected"),
        ("normalised noise", "noise x flux scale"),
        ("weight", "weight (reference 1)"),
    )
    n = len(table)
    unused = [k for k in range(n) if not table["used"][k]]
    lines = [f"#{k}: {table['frame'][k]}: {table['reason'][k]}" for k in unused]
    shown = lines[:12] + ([f"... and {len(lines) - 12} more"] if len(lines) > 12 else [])
    shown = [
        part
        for line in shown
        for part in textwrap.wrap(textwrap.shorten(line, 280), 140, subsequent_indent="    ")
    ]
    figure = Figure(figsize=(10, 11 + 0.16 * max(len(shown), 2)), layout="constrained")
    heights = [*([1] * len(panels)), 0.1 * max(len(shown), 2)]
    axes = figure.subplots(len(panels) + 1, 1, height_ratios=heights)
    numbers = np.arange(n)
    used = np.asarray(table["used"], bool)
    for ax, (key, label) in zip(axes, panels, strict=False):
        if key == "normalised noise":
            values = np.asarray(table["noise"], float) * np.asarray(table["flux_scale"], float)
        else:
            values = np.asarray(table[key], float)
        ax.plot(numbers[used], values[used], "o-", color="tab:blue", ms=4, label="stacked")
        ax.plot(numbers[~used], values[~used], "x", color="tab:red", ms=9, mew=2, label="unused")
        ax.set_ylabel(label)
        if ax is not axes[0]:
            ax.sharex(axes[0])
        ax.grid(alpha=0.3)
        if key == "weight" and np.any(values[used] > 0):
            ax.set_yscale("log")
    axes[0].legend(loc="best", fontsize="small")
    axes[0].set_title(f"{n} frames: {int(used.sum())} stacked, {n - int(used.sum())} unused")
    axes[len(panels) - 1].set_xlabel("frame number (in the order given)")
    text = axes[-1]
    text.axis("off")
    listed = "\n".join(shown) or "every frame stacked"
    # Outside the layout: the lines are wrapped to the figure's width.
    text.text(0, 1, listed, va="top", family="monospace", fontsize=8).set_in_layout(False)
    return figure
