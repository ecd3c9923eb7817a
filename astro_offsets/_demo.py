"""The embedded demonstration: a synthetic frame's star table in, its offset map out."""

import os
import time

import numpy as np
from astropy.table import Table

from ._model import OffsetModel
from ._naming import map_path
from ._synthetic import CameraMotion

__all__ = ["run_demo"]

# A Sony APS-C frame of the seed's sequences.
DEMO_SHAPE = (2848, 4256)
DEMO_STARS = 500
DEMO_SEED = 20230302


def _map_errors(omap, truth, stride=4):
    """Map minus truth on every ``stride``-th pixel (no full-frame temporaries)."""
    ny, nx = omap.shape
    y, x = np.mgrid[0:ny:stride, 0:nx:stride].astype(np.float64)
    true_x, true_y = truth.offset(x, y)
    return np.hypot(
        omap.x_offset[::stride, ::stride] - true_x, omap.y_offset[::stride, ::stride] - true_y
    )


def run_demo(outdir, *, n_jobs=-1, overwrite=True, echo=print):
    """Synthesize a star table with a known field, make its map, and report.

    Parameters
    ----------
    outdir : str or path-like
        Directory for ``demo.offsets_table.fits`` and ``demo.offsets.fits``
        (created if missing).
    n_jobs : int, optional
        Workers for the map, joblib's meaning. The default is -1, all cores.
    overwrite : bool, optional
        Replace files of an earlier demo. The default is `True`.
    echo : callable, optional
        Receives each line of the report. The default is `print`.

    Returns
    -------
    dict
        ``table``, ``map`` (paths), ``seconds``, ``rms`` and ``max_error`` (px,
        map against the true field), ``star_rms`` (px, the centroid noise put
        into the table).
    """
    os.makedirs(outdir, exist_ok=True)
    rng = np.random.default_rng(DEMO_SEED)
    ny, nx = DEMO_SHAPE
    truth = CameraMotion(DEMO_SHAPE)
    x = rng.uniform(0, nx - 1, DEMO_STARS)
    y = rng.uniform(0, ny - 1, DEMO_STARS)
    true_x, true_y = truth.offset(x, y)
    # Centroid noise of bright stars measured by DAOStarFinder.
    noise = rng.normal(0, 0.03, (2, DEMO_STARS))
    table = Table(
        {"xcentroid": x, "ycentroid": y, "xoffset": true_x + noise[0], "yoffset": true_y + noise[1]}
    )
    table.meta["COMMENT"] = ["astro_offsets demo: drift, field rotation, barrel distortion"]
    table_path = os.path.join(os.fspath(outdir), "demo.offsets_table.fits")
    table.write(table_path, overwrite=overwrite)
    echo(
        f"star table: {table_path} ({DEMO_STARS} stars on a {nx} x {ny} frame; "
        "drift, field rotation and barrel distortion)"
    )

    start = time.perf_counter()
    model = OffsetModel.read(table_path)
    omap = model.to_map(DEMO_SHAPE, n_jobs=n_jobs)
    out = map_path(table_path)
    omap.write(out, overwrite=overwrite)
    seconds = time.perf_counter() - start
    echo(f"offset map: {out} ({ny * nx / 1e6:.1f} Mpix, every pixel exact) in {seconds:.2f} s")

    errors = _map_errors(omap, truth)
    rms = float(np.sqrt(np.mean(errors**2)))
    max_error = float(errors.max())
    star_rms = float(np.sqrt(np.mean(np.sum(noise**2, axis=0))))
    echo(
        f"map against the true field: RMS {rms:.3f} px, max {max_error:.3f} px "
        f"(centroid noise in the table: {star_rms:.3f} px RMS)"
    )
    return {
        "table": table_path,
        "map": out,
        "seconds": seconds,
        "rms": rms,
        "max_error": max_error,
        "star_rms": star_rms,
    }
