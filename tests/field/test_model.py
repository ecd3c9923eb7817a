"""OffsetModel: construction from arrays, tables and files; validation."""

import numpy as np
import pytest
from astropy import units as u
from astropy.table import MaskedColumn, QTable, Table
from astropy.utils.exceptions import AstropyUserWarning

from astro_offsets import OffsetModel

X = [10.0, 20.0, 30.0, 15.5]
Y = [5.0, 25.0, 12.0, 30.0]
XO = [1.0, 1.5, 2.0, 0.0]
YO = [-0.5, 0.0, 0.5, 0.25]


def make_table(names=("xcentroid", "ycentroid", "xoffset", "yoffset"), cls=Table):
    return cls(dict(zip(names, (X, Y, XO, YO), strict=True)))


def test_from_arrays_keeps_stars_and_provenance():
    model = OffsetModel(X, Y, XO, YO, power=2, source="frame.offsets_table.fits")
    assert len(model) == 4
    assert model.power == 2.0
    np.testing.assert_array_equal(model.x, X)
    np.testing.assert_array_equal(model.y_offset, YO)
    trend = model.meta.pop("trend_rms"), model.meta.pop("trend_rotation")
    assert model.meta == {
        "source": "frame.offsets_table.fits",
        "n_stars": 4,
        "n_dropped": 0,
        "method": "quadrant",
        "parameter": "power",
        "parameter_value": 2.0,
        "trend": "affine",
        "clip": 3.0,
    }
    assert all(isinstance(value, float) for value in trend)
    assert model.trend == "affine"
    assert model.parameters == {"power": 2.0}
    assert model.degree is None  # another method's parameter
    assert repr(model) == "<OffsetModel: 4 stars, power=2>"
    with pytest.raises(ValueError, match="read-only"):
        model.x[0] = 3.0


@pytest.mark.parametrize(
    "names",
    [
        ("xcentroid", "ycentroid", "xoffset", "yoffset"),
        ("x_centroid", "y_centroid", "x_offset", "y_offset"),
        ("xcenter", "ycenter", "xoffset", "yoffset"),
        ("x", "y", "x_offset", "y_offset"),
    ],
)
def test_column_aliases(names):
    model = OffsetModel.from_table(make_table(names))
    np.testing.assert_array_equal(model.x, X)
    np.testing.assert_array_equal(model.y, Y)
    np.testing.assert_array_equal(model.x_offset, XO)
    np.testing.assert_array_equal(model.y_offset, YO)


def test_first_alias_wins():
    table = make_table()
    table["x"] = np.zeros(4)
    table["y"] = np.zeros(4)
    np.testing.assert_array_equal(OffsetModel.from_table(table).x, X)


def test_explicit_column_names():
    table = make_table(("cx", "cy", "dx", "dy"))
    model = OffsetModel.from_table(
        table, centroid_columns=("cx", "cy"), offset_columns=("dx", "dy")
    )
    np.testing.assert_array_equal(model.y_offset, YO)
    with pytest.raises(ValueError, match=r"no centroid column 'nope'; found columns: cx, cy"):
        OffsetModel.from_table(table, centroid_columns=("cx", "nope"), offset_columns=("dx", "dy"))


def test_missing_columns_lists_what_was_found():
    table = make_table(("xcentroid", "ycentroid", "dx", "dy"))
    with pytest.raises(
        ValueError,
        match=r"src.fits: no offset columns \(expected one of xoffset/yoffset, "
        r"x_offset/y_offset\); found columns: xcentroid, ycentroid, dx, dy",
    ):
        OffsetModel.from_table(table, source="src.fits")


def test_half_a_pair_is_not_a_match():
    table = make_table(("xcentroid", "y_centroid", "xoffset", "yoffset"))
    with pytest.raises(ValueError, match="no centroid columns"):
        OffsetModel.from_table(table)


def test_quantity_columns_in_pixels():
    table = make_table(cls=QTable)
    for name in table.colnames:
        table[name] = table[name] * u.pix
    np.testing.assert_array_equal(OffsetModel.from_table(table).x_offset, XO)
    table["xoffset"] = table["xoffset"].value * u.deg
    with pytest.raises(ValueError, match="column 'xoffset' has unit deg, expected pixels"):
        OffsetModel.from_table(table)


def test_non_numeric_column():
    table = make_table()
    table["yoffset"] = ["a", "b", "c", "d"]
    with pytest.raises(ValueError, match=r"column 'yoffset' is not numeric \(dtype <U1\)"):
        OffsetModel.from_table(table)


def test_masked_and_nan_rows_dropped_with_warning():
    table = make_table()
    table["xoffset"] = MaskedColumn(XO, mask=[False, True, False, False])
    table["ycentroid"][2] = np.nan
    with pytest.warns(AstropyUserWarning, match=r"dropped 2 of 4 stars .* \(rows 1, 2\)"):
        model = OffsetModel.from_table(table)
    assert len(model) == 2
    assert model.meta["n_dropped"] == 2
    np.testing.assert_array_equal(model.x, [10.0, 15.5])


def test_no_usable_star():
    with pytest.raises(ValueError, match=r"no usable star \(2 rows, none with finite"):
        OffsetModel([1.0, np.nan], [1.0, 2.0], [np.inf, 0.0], [0.0, np.nan])
    with pytest.raises(ValueError, match=r"no usable star \(0 rows"):
        OffsetModel.from_table(make_table()[:0])


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ([1.0, 2.0], [1.0], [0.0, 0.0], [0.0, 0.0]),
            r"star arrays differ in length \(x has 2, y has 1, x_offset has 2, y_offset has 2\)",
        ),
        (([[1.0]], [1.0], [0.0], [0.0]), r"x must be 1-D, got shape \(1, 1\)"),
        ((["a"], [1.0], [0.0], [0.0]), "x must be numeric"),
        (([1.0], [True], [0.0], [0.0]), "y must be numeric, got dtype bool"),
    ],
)
def test_bad_arrays(args, message):
    with pytest.raises(ValueError, match=message):
        OffsetModel(*args)


@pytest.mark.parametrize("power", [0, -1, 11, np.nan, "1", True])
def test_bad_power(power):
    with pytest.raises(ValueError, match=r"power must be a number in \(0, 10\]"):
        OffsetModel(X, Y, XO, YO, power=power)


@pytest.mark.parametrize("shape", [(0, 5), (5,), (2.5, 3), (-1, 4), "ab", None])
def test_bad_shape(shape):
    with pytest.raises(ValueError, match="shape must be two positive integers"):
        OffsetModel(X, Y, XO, YO).to_map(shape)


@pytest.mark.parametrize("block_size", ["big", (0, 4), (4,), (2.0, 3)])
def test_bad_block_size(block_size):
    with pytest.raises(ValueError, match="block_size must be 'auto'"):
        OffsetModel(X, Y, XO, YO).to_map((4, 4), block_size=block_size)


def test_bad_points():
    model = OffsetModel(X, Y, XO, YO)
    with pytest.raises(ValueError, match="px must be numeric"):
        model(["a"], [1.0])
    with pytest.raises(ValueError, match=r"do not broadcast: shapes \(2,\) and \(3,\)"):
        model([1.0, 2.0], [1.0, 2.0, 3.0])


@pytest.mark.parametrize("suffix", [".fits", ".ecsv", ".csv"])
def test_read_any_astropy_format(tmp_path, suffix):
    path = tmp_path / f"DSC0001.offsets_table{suffix}"
    make_table(("x_centroid", "y_centroid", "x_offset", "y_offset")).write(path)
    model = OffsetModel.read(path)
    np.testing.assert_array_equal(model.x_offset, XO)
    assert model.meta["source"] == str(path)


def test_read_missing_and_unreadable(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"nope.fits: no such file"):
        OffsetModel.read(tmp_path / "nope.fits")
    garbage = tmp_path / "garbage.offsets_table.fits"
    garbage.write_bytes(b"not a fits file at all")
    with pytest.raises(ValueError, match=r"garbage.offsets_table.fits: cannot read as a table"):
        OffsetModel.read(garbage)
    with pytest.raises(ValueError, match="is a directory"):
        OffsetModel.read(tmp_path)
