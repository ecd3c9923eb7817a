"""Star detection leaves sep's process-wide pixel stack as large as it found it."""

import numpy as np
import pytest
import sep

from astro_offsets.datasets import observe, star_field
from astro_offsets.stars import detect_stars


@pytest.fixture
def pixstack():
    before = sep.get_extract_pixstack()
    yield
    sep.set_extract_pixstack(before)


def _frame():
    rng = np.random.default_rng(4)
    x, y, flux = star_field(rng, 40, (120, 160))
    return observe(rng, (120, 160), x, y, flux).astype(np.float32)


def test_a_larger_pixel_stack_stays(pixstack):
    # A user's (or a larger frame's) setting is not lowered by a small frame.
    sep.set_extract_pixstack(5_000_000)
    stars = detect_stars(_frame())
    assert len(stars) > 10
    assert sep.get_extract_pixstack() == 5_000_000


def test_a_smaller_pixel_stack_is_raised(pixstack):
    sep.set_extract_pixstack(1000)
    detect_stars(_frame())
    assert sep.get_extract_pixstack() == 3_000_000
