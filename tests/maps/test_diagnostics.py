"""Map diagnostics: jumps, residuals at the stars, header cards, plots."""

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table

from astro_offsets import OffsetMap, OffsetModel
from astro_offsets._cli import main
from astro_offsets.maps import affine_slopes, jump_map, largest_jump, plot_map


def test_largest_jump_matches_a_plain_computation():
    rng = np.random.default_rng(0)
    # More rows than one block, so steps across block boundaries count too.
    x = rng.normal(size=(600, 70)).astype(np.float32)
    y = rng.normal(size=(600, 70)).astype(np.float32)
    y[256, 10] = 40.0  # a step that straddles the first block boundary
    expected = max(np.abs(np.diff(m, axis=a)).max() for m in (x, y) for a in (0, 1))
    assert largest_jump(x, y) == expected
    assert jump_map(x, y).max() == expected
    assert jump_map(x, y, stride=7).shape == (86, 10)


def test_diagnostics_in_the_header(tmp_path):
    rng = np.random.default_rng(1)
    model = OffsetModel(
        rng.uniform(0, 99, 30), rng.uniform(0, 79, 30), rng.normal(0, 1, 30), rng.normal(0, 1, 30)
    )
    omap = model.to_map((80, 100))
    found = omap.diagnostics()
    assert found["max_jump"] == largest_jump(omap.x_offset, omap.y_offset)
    assert 0 < found["star_rms"] < 1
    omap.write(tmp_path / "a.offsets.fits")
    header = fits.getheader(tmp_path / "a.offsets.fits")
    assert header["MAXJUMP"] == pytest.approx(found["max_jump"], abs=1e-6)
    assert header["STARRMS"] == pytest.approx(found["star_rms"], abs=1e-6)
    read = OffsetMap.read(tmp_path / "a.offsets.fits")
    assert read.meta["max_jump"] == header["MAXJUMP"]
    # A map read back keeps what was recorded; one that never knew its stars
    # records only the jump.
    read.write(tmp_path / "b.offsets.fits")
    assert fits.getheader(tmp_path / "b.offsets.fits")["STARRMS"] == header["STARRMS"]
    OffsetMap(omap.x_offset, omap.y_offset).write(tmp_path / "c.offsets.fits")
    header = fits.getheader(tmp_path / "c.offsets.fits")
    assert "STARRMS" not in header
    assert "MAXJUMP" in header


def test_plot_panels():
    model = OffsetModel([5.0, 30.0, 18.0], [4.0, 20.0, 9.0], [0.0, 3.0, 1.0], [0.0, 0.0, 1.0])
    figure = model.to_map((25, 40)).plot()
    titles = [ax.get_title() for ax in figure.axes]
    assert any(t.startswith("X offset") for t in titles)
    omap = model.to_map((25, 40))
    slopes = affine_slopes(omap.x_offset, omap.y_offset)
    expected = largest_jump(omap.x_offset, omap.y_offset, slopes=slopes)
    assert any(
        t.startswith(
            f"jumps between neighbours beyond the affine motion: largest {expected:.3g} px"
        )
        for t in titles
    )
    assert any(t.startswith("3 star offsets") for t in titles)
    bare = OffsetMap(np.zeros((5, 6)), np.zeros((5, 6))).plot()
    assert any(t.texts and t.texts[0].get_text() == "no stars given" for t in bare.axes)


def test_maps_command_plot(tmp_path, capsys):
    rng = np.random.default_rng(2)
    Table(
        {
            "x": rng.uniform(0, 60, 20),
            "y": rng.uniform(0, 40, 20),
            "x_offset": rng.normal(1.0, 0.05, size=20),
            "y_offset": rng.normal(-0.5, 0.05, size=20),
        }
    ).write(tmp_path / "f.offsets_table.ecsv")
    assert (
        main(["maps", str(tmp_path / "f.offsets_table.ecsv"), "--shape", "40", "60", "--plot"]) == 0
    )
    import matplotlib.image

    assert matplotlib.image.imread(tmp_path / "f.offsets.png").ndim == 3
    # A plot left from an earlier map is replaced along with the map.
    (tmp_path / "f.offsets.fits").unlink()
    (tmp_path / "f.offsets.png").write_text("stale")
    assert (
        main(["maps", str(tmp_path / "f.offsets_table.ecsv"), "--shape", "40", "60", "--plot"]) == 0
    )
    assert matplotlib.image.imread(tmp_path / "f.offsets.png").ndim == 3


def test_plot_names_the_frame_and_scales_the_jumps(tmp_path):
    rng = np.random.default_rng(3)
    x, y = rng.uniform(0, 300, (2, 200))
    table = tmp_path / "DSC0042.offsets_table.ecsv"
    Table({"x": x, "y": y, "x_offset": 2 + 1e-5 * x**2, "y_offset": -1 + 2e-3 * y}).write(table)
    omap = OffsetModel.read(table, method="polynomial", degree=2).to_map((200, 300))
    figure = omap.plot()
    assert figure._suptitle.get_text().startswith("DSC0042: polynomial degree=2")
    # A smooth field's jumps are thousandths of a pixel: the colour scale
    # follows them rather than running to 1 px, where they would be black.
    jumps_axes = next(ax for ax in figure.axes if ax.get_title().startswith("jumps"))
    norm = jumps_axes.images[0].norm
    slopes = affine_slopes(omap.x_offset, omap.y_offset)
    assert norm.vmax == pytest.approx(jump_map(omap.x_offset, omap.y_offset, slopes=slopes).max())
    assert norm.vmax < 0.01
    assert "none over 1 px" in jumps_axes.get_title()
    # The arrow key sits under the star panel, not among its arrows.
    stars_axes = next(ax for ax in figure.axes if "star offsets" in ax.get_title())
    (key,) = (a for a in stars_axes.artists if hasattr(a, "Q"))
    assert key.Y < 0


def test_failed_plot_keeps_the_map_and_a_rerun_makes_it(tmp_path, capsys):
    rng = np.random.default_rng(4)
    table = tmp_path / "f.offsets_table.ecsv"
    Table(
        {
            "x": rng.uniform(0, 60, 20),
            "y": rng.uniform(0, 40, 20),
            "x_offset": rng.normal(1.0, 0.05, size=20),
            "y_offset": rng.normal(-0.5, 0.05, size=20),
        }
    ).write(table)
    # A directory where the plot goes: the plot cannot be written.
    (tmp_path / "f.offsets.png").mkdir()
    argv = ["maps", str(table), "--shape", "40", "60", "--plot"]
    assert main(argv) == 0
    out, err = capsys.readouterr()
    assert out.strip().splitlines()[-1] == "maps: 1 written, 0 skipped, 0 failed"
    assert f"astro-offsets: warning: {tmp_path / 'f.offsets.png'}: " in err
    assert OffsetMap.read(tmp_path / "f.offsets.fits").shape == (40, 60)
    # The rerun keeps the map and makes the plot it lacks.
    (tmp_path / "f.offsets.png").rmdir()
    before = (tmp_path / "f.offsets.fits").read_bytes()
    assert main(argv) == 0
    assert (
        capsys.readouterr().out.strip().splitlines()[-1] == "maps: 0 written, 1 skipped, 0 failed"
    )
    assert (tmp_path / "f.offsets.fits").read_bytes() == before
    import matplotlib.image

    assert matplotlib.image.imread(tmp_path / "f.offsets.png").ndim == 3


@pytest.mark.parametrize(
    ("reference", "roworder", "top_row"),
    [
        ("DSC0001.ARW", None, 0),  # a raw frame's first row is the photo's top
        ("light_001.fits", None, 24),  # a FITS frame's first row is the bottom, as DS9 has it
        (None, None, 24),
        ("light_001.fits", "TOP-DOWN", 0),
    ],
)
def test_plot_shows_the_rows_as_the_frame_is_shown(reference, roworder, top_row):
    omap = OffsetMap(np.zeros((25, 40)), np.zeros((25, 40)), meta={"reference": reference})
    figure = plot_map(omap, roworder=roworder)
    for ax in figure.axes:
        if ax.get_images():
            bottom, top = ax.get_ylim()
            assert (top < bottom) == (top_row == 0)
    with pytest.raises(ValueError, match="roworder must be"):
        plot_map(omap, roworder="UPSIDE")


def test_a_flipped_frame_has_no_jumps_beyond_its_motion():
    # A meridian flip: the offsets change by 2 px from pixel to pixel (and a
    # little more where a lens bends them), yet the pixels land side by side.
    y, x = np.mgrid[:60, :90].astype(float)
    bend = 1e-3 * (x - 45) ** 2 / 45
    x_offset, y_offset = 2 * x - 89 + bend, 2 * y - 59
    assert largest_jump(x_offset, y_offset) > 1.9  # the raw steps: "over 1 px"
    slopes = affine_slopes(x_offset, y_offset)
    np.testing.assert_allclose(slopes, [[2.0, 0.0], [0.0, 2.0]], atol=1e-3)
    beyond = largest_jump(x_offset, y_offset, slopes=slopes)
    assert beyond < 0.01
    jumps = jump_map(x_offset, y_offset, 7, slopes=slopes)
    assert jumps.max() == pytest.approx(beyond, abs=1e-3)
    # A real jump of 1.5 px is still one, flipped or not.
    x_offset[:, 40:] += 1.5
    slopes = affine_slopes(x_offset, y_offset)
    assert largest_jump(x_offset, y_offset, slopes=slopes) > 1.4
    figure = OffsetMap(x_offset, y_offset).plot()
    assert any("red: " in ax.get_title() for ax in figure.axes)
