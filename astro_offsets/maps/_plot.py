"""Plots of offset maps: the X and Y maps, their pixel-to-pixel jumps, the stars."""

import math

import numpy as np

from .._utils.atomic import atomic_path
from .._utils.naming import stem
from .._utils.provenance import named_raw, png_metadata
from ._diagnostics import affine_slopes, jump_map, largest_jump, star_rms

__all__ = ["plot_map", "write_plot"]

_RED = "Reds_r"


def write_plot(omap, path, stars=None, *, roworder=None):
    """Write `plot_map` of ``omap`` as a PNG file, atomically, replacing an older one."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    figure = plot_map(omap, stars, roworder=roworder)
    FigureCanvasAgg(figure)
    with atomic_path(path, overwrite=True) as tmp:
        figure.savefig(tmp, format="png", dpi=80, metadata=png_metadata("map plot"))


def plot_map(omap, stars=None, *, figure=None, max_size=800, roworder=None):
    """Plot an offset map: X and Y maps, pixel-to-pixel jumps, and the star offsets.

    See `OffsetMap.plot`. The map is shown as its frame is: ``roworder``
    ``"BOTTOM-UP"`` puts row 0 at the bottom (FITS frames, as DS9 and Siril
    show them), ``"TOP-DOWN"`` at the top (raw files, as a photo is shown);
    `None` (the default) takes the reference frame's, as its star table
    recorded it (``meta["roworder"]``, ``REFROWS``), or for maps of older
    tables ``"TOP-DOWN"`` if the reference (``meta["reference"]``) is named
    as a raw file, else ``"BOTTOM-UP"``. The stack's preview shows it the
    same way.
    """
    if roworder is None:
        reference = omap.meta.get("reference")
        roworder = omap.meta.get("roworder") or (
            "TOP-DOWN" if reference and named_raw(reference) else "BOTTOM-UP"
        )
    if roworder not in ("TOP-DOWN", "BOTTOM-UP"):
        raise ValueError(f"roworder must be 'TOP-DOWN' or 'BOTTOM-UP', got {roworder!r}")
    # matplotlib is imported when a plot is made: the command line starts fast.
    from matplotlib.colors import PowerNorm
    from matplotlib.figure import Figure

    stars = stars if stars is not None else omap.stars
    figure = figure if figure is not None else Figure(figsize=(11, 8.5), layout="constrained")
    axes = figure.subplots(2, 2, sharex=True, sharey=True)
    ny, nx = omap.shape
    stride = max(1, math.ceil(max(ny, nx) / max_size))
    extent = (-0.5, nx - 0.5, -0.5, ny - 0.5)
    for ax, values, name in ((axes[0, 0], omap.x_offset, "X"), (axes[0, 1], omap.y_offset, "Y")):
        image = ax.imshow(
            values[::stride, ::stride],
            origin="lower",
            extent=extent,
            cmap="viridis",
            interpolation="nearest",
        )
        figure.colorbar(image, ax=ax, label="pixels")
        ax.set_title(f"{name} offset: this frame minus the reference")
    # Beyond the frame's affine motion: a meridian flip or a half turn moves the
    # offsets by 2 px from pixel to pixel, yet lands the pixels side by side.
    slopes = affine_slopes(omap.x_offset, omap.y_offset)
    jumps = jump_map(omap.x_offset, omap.y_offset, stride, slopes=slopes)
    largest = largest_jump(omap.x_offset, omap.y_offset, slopes=slopes)
    # The scale follows the jumps themselves: a smooth field's thousandths of
    # a pixel are seen, not drowned on a 0..1 scale; red marks what hurts.
    top = max(float(np.nanmax(jumps)), 1e-6) if np.isfinite(jumps).any() else 1.0
    image = axes[1, 0].imshow(
        jumps,
        origin="lower",
        extent=extent,
        cmap="magma",
        # A square-root scale: the small steps of a smooth field show too.
        norm=PowerNorm(0.5, vmin=0, vmax=top),
        interpolation="nearest",
    )
    figure.colorbar(image, ax=axes[1, 0], label="pixels")
    over = np.ma.masked_less_equal(jumps, 1.0)
    if over.count():
        axes[1, 0].imshow(over, origin="lower", extent=extent, cmap=_RED, interpolation="nearest")
    axes[1, 0].set_title(
        f"jumps between neighbours beyond the affine motion: largest {largest:.3g} px\n"
        + (
            f"red: {over.count()} sampled pixels over 1 px, which hurts drizzle"
            if over.count()
            else "none over 1 px, which would hurt drizzle"
        ),
        fontsize="medium",
    )
    ax = axes[1, 1]
    ax.set_aspect("equal")
    if stars is not None:
        x, y = stars.x, stars.y
        u = stars.x_offset - np.median(stars.x_offset)
        v = stars.y_offset - np.median(stars.y_offset)
        arrows = ax.quiver(x, y, u, v, angles="xy", color="tab:blue", width=0.003)
        length = float(np.percentile(np.hypot(u, v), 90)) or 1.0
        # The key sits under the panel, clear of the arrows.
        ax.quiverkey(
            arrows,
            0.02,
            -0.2,
            length,
            f"arrow of {length:.2g} px",
            labelpos="E",
            coordinates="axes",
        )
        clipped = np.asarray(stars.clipped)
        if clipped.any():
            ax.plot(x[clipped], y[clipped], "x", color="tab:red", markersize=6)
        rms = star_rms(omap.x_offset, omap.y_offset, stars)
        rms = float("nan") if rms is None else rms
        ax.set_title(
            f"{len(x)} star offsets minus their median"
            + (f" ({np.count_nonzero(clipped)} clipped: red)" if clipped.any() else "")
            + f"\nmap minus stars at the stars: RMS {rms:.3f} px",
            fontsize="medium",
        )
    else:
        ax.text(0.5, 0.5, "no stars given", ha="center", va="center", transform=ax.transAxes)
    ax.set_xlim(extent[0], extent[1])
    # The axes share y: row 0 at the top of all of them, for a top-down frame.
    ax.set_ylim(*(extent[3:1:-1] if roworder == "TOP-DOWN" else extent[2:]))
    source = omap.meta.get("source")
    title = [stem(source) if source else None, omap.field_summary]
    if any(title):
        figure.suptitle(": ".join(part for part in title if part))
    for ax in axes[1]:
        ax.set_xlabel("x (pixels)")
    for ax in axes[:, 0]:
        ax.set_ylabel("y (pixels)")
    return figure
