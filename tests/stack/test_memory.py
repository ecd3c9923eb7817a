"""The memory of a stack with rejection does not grow with the number of frames."""

import shutil
import tracemalloc

import numpy as np

from astro_offsets import OffsetMap, stack_frames
from astro_offsets.datasets import observe, star_field, write_dng
from astro_offsets.stack._rejection import Rejection

SHAPE = (400, 600)


def raw_sequence(folder, n_frames):
    """``n_frames`` copies of one raw frame; maps of zeros move all but the first."""
    rng = np.random.default_rng(5)
    x, y, flux = star_field(rng, 200, SHAPE, faintest=3000.0)
    sky = observe(rng, SHAPE, x, y, flux, sigma=1.8, sky=800.0, read_noise=5.0)
    first = folder / "IMG_000.dng"
    write_dng(first, np.clip(sky + 512, 0, 16383).astype(np.uint16))
    zeros = np.zeros(SHAPE, np.float32)
    frames = [str(first)]
    for k in range(1, n_frames):
        frame = folder / f"IMG_{k:03d}.dng"
        shutil.copyfile(first, frame)
        OffsetMap(zeros, zeros).write(folder / f"IMG_{k:03d}.offsets.fits")
        frames.append(str(frame))
    return frames


def held_between_passes(frames, monkeypatch):
    """Return the bytes allocated when the frames are all kept, before their median."""
    held = []
    combine = Rejection.combine

    def measured(self, *args, **kwargs):
        self.wait()  # the last frame's single drizzle, and its work arrays, done
        held.append(tracemalloc.get_traced_memory()[0])
        return combine(self, *args, **kwargs)

    monkeypatch.setattr(Rejection, "combine", measured)
    tracemalloc.start()
    try:
        stack, results = stack_frames(frames, reference=frames[0], n_jobs=1, context=False)
    finally:
        tracemalloc.stop()
    assert [r.status for r in results] == ["stacked"] * len(frames)
    assert stack.meta["rejected"]
    return held[0]


def test_rejection_memory_does_not_grow_with_frames(tmp_path, monkeypatch):
    (tmp_path / "few").mkdir()
    (tmp_path / "many").mkdir()
    few = raw_sequence(tmp_path / "few", 4)
    many = raw_sequence(tmp_path / "many", 16)
    held_between_passes(few, monkeypatch)  # imports, caches
    grown = held_between_passes(many, monkeypatch) - held_between_passes(few, monkeypatch)
    # Between the passes the frames wait in the scratch files, not in
    # memory: twelve frames more may not keep an eighth of a byte a pixel
    # each (the colour pattern of every frame did: 2.9 MB here; what Python
    # keeps per frame, its results and caches, is some 10 kB).
    assert grown < 12 * SHAPE[0] * SHAPE[1] / 8, grown
