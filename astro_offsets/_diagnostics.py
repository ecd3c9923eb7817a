"""Diagnostics of offset maps: pixel-to-pixel jumps, residuals at the stars, plots."""

import numpy as np
from scipy.ndimage import map_coordinates

from ._naming import stem

__all__ = ["largest_jump", "jump_map", "star_residuals", "star_rms", "plot_map", "write_plot"]

_ROWS = 256  # rows per block: no full-frame temporaries on large maps
_RED = "Reds_r"


def largest_jump(x_offset, y_offset):
    """Return the largest difference between neighbouring pixels of either map (px).

    The original notebook's author checked Laplacians for pixel-to-pixel jumps:
    a jump over 1 px moves neighbouring input pixels apart (or onto each
    other) in the drizzled output.

    Examples
    --------
    >>> import numpy as np
    >>> from astro_offsets._diagnostics import largest_jump
    >>> x = np.zeros((4, 5), np.float32)
    >>> x[:, 3:] = 1.5
    >>> float(largest_jump(x, np.zeros((4, 5), np.float32)))
    1.5
    """
    largest = 0.0
    ny = x_offset.shape[0]
    for start in range(0, ny, _ROWS):
        stop = min(start + _ROWS + 1, ny)  # one row of overlap for the vertical steps
        for m in (x_offset, y_offset):
            block = m[start:stop]
            if block.shape[1] > 1:
                largest = max(largest, float(np.nanmax(np.abs(np.diff(block, axis=1)))))
            if block.shape[0] > 1:
                largest = max(largest, float(np.nanmax(np.abs(np.diff(block, axis=0)))))
    return largest


def jump_map(x_offset, y_offset, stride=1):
    """Return, per pixel, the largest step to its right or upper neighbour in either map.

    ``stride`` samples every ``stride``-th pixel (steps are still between
    neighbours), for plots of large maps.
    """
    ny, nx = x_offset.shape
    rows = np.arange(0, ny, stride)
    cols = np.arange(0, nx, stride)
    out = np.zeros((len(rows), len(cols)), np.float32)
    right = np.minimum(cols + 1, nx - 1)
    up = np.minimum(rows + 1, ny - 1)
    for m in (x_offset, y_offset):
        here = m[np.ix_(rows, cols)]
        np.maximum(out, np.abs(m[np.ix_(rows, right)] - here), out=out)
        np.maximum(out, np.abs(m[np.ix_(up, cols)] - here), out=out)
    return out


def star_residuals(x_offset, y_offset, x, y, x_star, y_star):
    """Return the map (bilinearly interpolated) minus the stars' offsets, at the stars.

    Stars outside the map are left out.

    Returns
    -------
    dx, dy : `~numpy.ndarray`
        Residuals in x and y, one per star inside the map.
    """
    ny, nx = x_offset.shape
    inside = (x >= 0) & (x <= nx - 1) & (y >= 0) & (y <= ny - 1)
    coords = np.vstack([y[inside], x[inside]])
    dx = map_coordinates(x_offset, coords, order=1) - x_star[inside]
    dy = map_coordinates(y_offset, coords, order=1) - y_star[inside]
    return dx, dy


def star_rms(x_offset, y_offset, model):
    """Return the RMS (px) over the stars of the map minus the stars' offsets, or `None`.

    `None` when no star of ``model`` lies inside the map. Stars the model
    left out by sigma-clipping are left out here too.
    """
    kept = ~model.clipped
    dx, dy = star_residuals(
        x_offset,
        y_offset,
        model.x[kept],
        model.y[kept],
        model.x_offset[kept],
        model.y_offset[kept],
    )
    return float(np.sqrt(np.mean(dx * dx + dy * dy))) if len(dx) else None


def write_plot(omap, path, model=None):
    """Write `plot_map` of ``omap`` as a PNG file, atomically, replacing an older one."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    from ._atomic import atomic_path

    figure = omap.plot(model)
    FigureCanvasAgg(figure)
    with atomic_path(path, overwrite=True) as tmp:
        figure.savefig(tmp, format="png", dpi=80)


def plot_map(omap, model=None, *, figure=None, max_size=800):
    """Plot an offset map: X and Y maps, pixel-to-pixel jumps, and the star offsets.

    See `OffsetMap.plot`.
    """
    import math

    from matplotlib.colors import PowerNorm
    from matplotlib.figure import Figure

    from ._selection import summary

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
    jumps = jump_map(omap.x_offset, omap.y_offset, stride)
    largest = largest_jump(omap.x_offset, omap.y_offset)
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
        f"jumps between neighbours: largest {largest:.3g} px\n"
        + (
            f"red: {over.count()} sampled pixels over 1 px, which hurts drizzle"
            if over.count()
            else "none over 1 px, which would hurt drizzle"
        ),
        fontsize="medium",
    )
    ax = axes[1, 1]
    ax.set_aspect("equal")
    if model is not None:
        x, y = model.x, model.y
        u = model.x_offset - np.median(model.x_offset)
        v = model.y_offset - np.median(model.y_offset)
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
        clipped = model.clipped
        if clipped.any():
            ax.plot(x[clipped], y[clipped], "x", color="tab:red", markersize=6)
        rms = star_rms(omap.x_offset, omap.y_offset, model)
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
    ax.set_ylim(extent[2], extent[3])
    source = omap.meta.get("source")
    title = [stem(source) if source else None, summary(omap.meta)]
    if any(title):
        figure.suptitle(": ".join(part for part in title if part))
    for ax in axes[1]:
        ax.set_xlabel("x (pixels)")
    for ax in axes[:, 0]:
        ax.set_ylabel("y (pixels)")
    return figure
