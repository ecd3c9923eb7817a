"""A frame's failure: one line naming it, the traceback behind it, across processes."""

import pickle

import pytest

from astro_offsets._utils.batch import FrameError, describe


def test_a_frame_error_pickles_with_its_traceback():
    try:
        raise KeyError("x")
    except KeyError as exc:
        failed = FrameError(describe("a.fits", exc), 3)
    back = pickle.loads(pickle.dumps(failed))
    assert isinstance(back, ValueError)
    assert str(back) == "a.fits: KeyError: 'x'"
    assert back.detected == 3
    assert "Traceback (most recent call last)" in back.message.traceback
    # The line, with its traceback, as the batch records it.
    assert describe("a.fits", back.message) == "a.fits: KeyError: 'x'"
    assert describe("a.fits", back.message).traceback == back.message.traceback


def test_out_of_memory_is_no_files_failure():
    # Raised again: the run stops, rather than fail this file and the next.
    problem = MemoryError("Unable to allocate 2.00 TiB for an array")
    with pytest.raises(MemoryError) as raised:
        describe("a.fits", problem)
    assert raised.value is problem
    # Named where it happened, once (the command line says the notes).
    with pytest.raises(MemoryError):
        describe("a.fits", problem)
    assert problem.__notes__ == ["while on a.fits"]
