"""Folded maps: found exactly, never written, refused by the stacker before drizzle."""

import subprocess
import sys
import textwrap

import numpy as np
import pytest
from astropy.table import Table

from astro_offsets import OffsetMap, OffsetModel, write_maps
from astro_offsets.datasets import CameraMotion, star_offsets
from astro_offsets.maps import find_folds
from astro_offsets.maps._folds import _cell_determinants


def brute_force(x_offset, y_offset, step=1.0):
    """Every cell's smallest corner determinant, straight from the definition."""
    ny, nx = x_offset.shape
    j, i = np.mgrid[0:ny, 0:nx].astype(np.float64)
    px = step * i - x_offset.astype(np.float64)
    py = step * j - y_offset.astype(np.float64)
    corners = [(px[:-1, :-1], py[:-1, :-1]), (px[:-1, 1:], py[:-1, 1:])]
    corners += [(px[1:, 1:], py[1:, 1:]), (px[1:, :-1], py[1:, :-1])]  # p00 p10 p11 p01
    smallest = np.full((ny - 1, nx - 1), np.inf)
    for k in range(4):
        (ax, ay), (bx, by), (cx, cy) = corners[k - 1], corners[k], corners[(k + 1) % 4]
        cross = (bx - ax) * (cy - by) - (by - ay) * (cx - bx)
        smallest = np.fmin(smallest, cross)
    return smallest


def test_smooth_maps_and_turned_frames_do_not_fold():
    shape = (300, 400)
    j, i = np.mgrid[0:300, 0:400].astype(np.float64)
    for rotation in (0.0, 2.0, 90.0, 180.0, -135.0):
        motion = CameraMotion(shape, rotation_deg=rotation, pole=(199.5, 149.5), barrel=1e-7)
        x, y = motion.offset(i, j)
        assert find_folds(x.astype(np.float32), y.astype(np.float32)) is None, rotation
    # A mirror turns every quadrilateral inside out.
    folds = find_folds((2 * i).astype(np.float32), np.zeros(shape, np.float32))
    assert folds.n_pixels == 299 * 399
    assert (folds.x_range, folds.y_range, folds.worst) == ((0, 398), (0, 298), -1.0)


@pytest.mark.parametrize("step", [1, 2])
def test_folds_are_the_cells_with_a_non_positive_corner(step):
    rng = np.random.default_rng(step)
    shape = (700, 90)  # several row blocks
    x = rng.normal(0, 0.05, shape).astype(np.float32)
    y = rng.normal(0, 0.05, shape).astype(np.float32)
    # Jumps here and there, some across the blocks' rows.
    for _ in range(12):
        j, i = rng.integers(0, shape[0]), rng.integers(0, shape[1])
        x[j : j + 3, i] += rng.choice([-1, 1]) * rng.uniform(0.4, 2.5) * step
        y[j, i : i + 2] += rng.uniform(-2, 2) * step
    x[5, 5] = np.nan  # cells drizzle skips
    expected = brute_force(x, y, step)
    np.testing.assert_allclose(_cell_determinants(x, y, step), expected, rtol=1e-12, atol=1e-9)
    folded = expected <= 0
    rows, columns = np.nonzero(folded)
    found = find_folds(x, y, step=step)
    assert found.n_pixels == folded.sum() > 0
    assert found.x_range == (columns.min(), columns.max())
    assert found.y_range == (rows.min(), rows.max())
    assert found.worst == pytest.approx(expected[folded].min() / step**2)


def test_check_folds_names_the_map():
    x = np.zeros((20, 30))
    x[:, 12:] = 2.0
    omap = OffsetMap(x, np.zeros((20, 30)), meta={"source": "F7.offsets_table.fits"})
    with pytest.raises(ValueError, match=r"^F7\.offsets_table\.fits: the map folds at 19 pixels "):
        omap.check_folds()
    with pytest.raises(ValueError, match=r"^the offset map folds at 19 pixels at x 11-11, y 0-18 "):
        OffsetMap(x, np.zeros((20, 30))).check_folds()
    OffsetMap(np.full((20, 30), 5.0), np.full((20, 30), -3.0)).check_folds()  # a shift
    # A Bayer plane (every other pixel from (1, 1)): where the fold is in the frame.
    x = np.zeros((40, 60))
    x[:, 25:] = 4.0
    with pytest.raises(ValueError, match=r"folds at 19 pixels at x 23-23, y 1-37 "):
        OffsetMap(x, np.zeros((40, 60))).check_folds(origin=(1, 1), step=2)
    # A quadrant field folds where a mismatched star is: the hint says what to do.
    quadrant = OffsetMap(x, np.zeros((40, 60)), meta={"method": "quadrant"})
    with pytest.raises(ValueError, match=r"a mismatch, .* try a fitted method \(auto\)"):
        quadrant.check_folds()
    # Unless auto chose it, after its fitted field folded: then the stars are the problem.
    meta = {"method": "quadrant", "selection": "auto, quadrant: fold"}
    with pytest.raises(
        ValueError, match=r"the fields auto tried all fold there, .* check the star"
    ):
        OffsetMap(x, np.zeros((40, 60)), meta=meta).check_folds()


def test_a_fitted_field_that_folds_beyond_its_stars_is_refused(tmp_path):
    # Stars in the top-left eighth of the frame only: a polynomial of degree
    # 7 extrapolated to the empty corners folds there.
    shape = (1200, 1800)
    motion = CameraMotion(shape, rotation_deg=0.5, barrel=3e-8)
    rng = np.random.default_rng(3)
    x, y, dx, dy, _ = star_offsets(rng, motion, (400, 600), 200, noise=0.05)
    table = tmp_path / "F1.offsets_table.ecsv"
    Table({"x": x, "y": y, "x_offset": dx, "y_offset": dy}).write(table)
    model = OffsetModel.read(table, method="polynomial", degree=7)
    with pytest.warns(UserWarning, match="reaches"):
        folds = model.to_map(shape).folds()
    assert folds.n_pixels > 1000
    assert folds.x_range[1] > 600 or folds.y_range[1] > 400  # beyond the stars
    [result] = write_maps([table], shape, method="polynomial", degree=7)
    assert result.status == "failed"
    assert result.message.startswith(f"{table}: the map folds at {folds.n_pixels} pixels at x ")
    assert "reaches" in result.warnings[0]
    assert not (tmp_path / "F1.offsets.fits").exists()
    # The default field on the same stars follows them and does not fold.
    [result] = write_maps([table], shape)
    assert result.status == "written"
    assert OffsetMap.read(result.output).folds() is None


def test_an_auto_choice_that_folds_gives_way_to_the_quadrant_field(tmp_path):
    # A field of degree 6 over the stars, in the top-left eighth of the
    # frame: auto chooses degree 6, which folds in the empty corners; the
    # quadrant field on the trend, which follows the stars, takes its place.
    shape = (1200, 1800)
    rng = np.random.default_rng(3)
    x, y = rng.uniform(0, 600, 200), rng.uniform(0, 400, 200)
    u, v = (x - 300) / 300, (y - 200) / 300
    dx = 1 + 0.5 * u**6 - 0.3 * u**3 * v**2 + rng.normal(0, 0.01, 200)
    dy = -1 + 0.4 * v**5 * u + rng.normal(0, 0.01, 200)
    table = tmp_path / "F3.offsets_table.ecsv"
    Table({"x": x, "y": y, "x_offset": dx, "y_offset": dy}).write(table)
    [result] = write_maps([table], shape)
    assert result.status == "written"
    assert result.warnings[0].startswith(f"{table}: polynomial degree=")
    assert result.warnings[0].endswith("the quadrant field on the trend is used instead")
    omap = OffsetMap.read(result.output)
    assert omap.folds() is None
    assert (omap.meta["method"], omap.meta["selection"]) == ("quadrant", "auto, quadrant: fold")
    assert omap.meta["trend"] == "affine"


def test_the_stacker_refuses_a_folded_map_before_drizzle(tmp_path):
    # In another process: drizzle 3.0's C code crashes on a folded pixmap,
    # and would take pytest with it.
    script = textwrap.dedent(
        """
        import numpy as np
        from astro_offsets import OffsetMap, Stacker

        x = np.zeros((60, 80), np.float32)
        x[30:, 40:] = 3.0
        for bayer in (False, True):
            colors = np.tile(np.array([[0, 1], [3, 2]], np.uint8), (30, 40)) if bayer else None
            with Stacker((60, 80), n_jobs=1, bayer=bayer) as stacker:
                stacker.add(np.ones((60, 80), np.float32), colors=colors)
                try:
                    stacker.add(np.ones((60, 80), np.float32), OffsetMap(x, 0 * x),
                                colors=colors, map_name="F2.offsets.fits")
                except ValueError as error:
                    print(error)
                stacker.add(np.ones((60, 80), np.float32), OffsetMap(0 * x + 0.5, 0 * x),
                            colors=colors)
                print(len(stacker.stack().meta["frames"]))
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stdout.splitlines()
    assert len(lines) == 4, lines
    for line in lines[::2]:
        assert line.startswith("F2.offsets.fits: the map folds at ")
    assert lines[1] == lines[3] == "2"  # the folded frame left out, the others stacked
