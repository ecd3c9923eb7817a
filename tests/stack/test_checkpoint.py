"""Checkpoints: a stack killed (SIGKILL) half way and resumed is the uninterrupted stack."""

import json
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
from astropy.io import fits
from rejection_sequence import bright_field, write_sequence

from astro_offsets import stack_frames
from astro_offsets._cli import main

# A run killed once its 5th frame is stacked: the checkpoint (every 2
# frames) holds the first 4; the 5th went into the stacker, not into it.
KILLED_AFTER = 5
EVERY = 2


@pytest.fixture(scope="module")
def frames(tmp_path_factory):
    return write_sequence(tmp_path_factory.mktemp("sequence"), bright_field())


@pytest.fixture(scope="module")
def uninterrupted(frames):
    return {reject: stack_frames(frames, reject=reject)[0] for reject in (True, False)}


def kill_half_way(frames, checkpoint, reject, scheduler=None, scratch=None):
    """Stack in another process that SIGKILLs itself once the 5th frame is stacked.

    With a ``scheduler``, on its dask cluster: the frames are reported
    there once each share is stacked (and saved in the checkpoint).
    """
    script = textwrap.dedent(
        f"""
        import os, signal
        from astro_offsets import stack_frames

        stacked = 0

        def on_frame(result):
            global stacked
            stacked += result.status == "stacked"
            if stacked == {KILLED_AFTER}:
                os.kill(os.getpid(), signal.SIGKILL)

        if __name__ == "__main__":
            stack_frames({frames!r}, reject={reject!r}, n_jobs=2, callback=on_frame,
                         checkpoint={str(checkpoint)!r}, checkpoint_every={EVERY},
                         scratch={None if scratch is None else str(scratch)!r},
                         client={scheduler!r})
        """
    )
    # Its output to a file: the worker processes it leaves behind, until
    # they find their parent gone, would hold a pipe open.
    log = checkpoint.parent / "killed.log"
    with open(log, "w") as file:
        # Run elsewhere than the source tree: the package is the installed one.
        done = subprocess.run(
            [sys.executable, "-c", script], stdout=file, stderr=file, cwd=checkpoint.parent
        )
    assert done.returncode == -signal.SIGKILL, log.read_text()
    if scheduler is None:
        with open(checkpoint / "share.0.json") as file:
            assert len(json.load(file)["frames"]) == KILLED_AFTER - 1


def assert_same(stack, expected):
    for name in expected.channels:
        assert np.array_equal(stack.images[name], expected.images[name], equal_nan=True)
        assert np.array_equal(stack.weights[name], expected.weights[name])
        assert np.array_equal(stack.contexts[name], expected.contexts[name])
    assert stack.meta["frames"] == expected.meta["frames"]
    assert stack.meta["total_exptime"] == expected.meta["total_exptime"]
    # What the reference frame's file tells, also when resumed.
    assert stack.meta["wcs"].to_header() == expected.meta["wcs"].to_header()
    assert stack.meta["observation"] == expected.meta["observation"] == [("OBJECT", "NGC 7000", "")]


@pytest.mark.slow
@pytest.mark.parametrize("reject", [True, False], ids=["rejection", "no rejection"])
def test_killed_and_resumed_is_the_uninterrupted_stack(frames, uninterrupted, reject, tmp_path):
    checkpoint = tmp_path / "stack.checkpoint"
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    kill_half_way(frames, checkpoint, reject, scratch=scratch)
    left = os.listdir(scratch)
    assert left  # the killed run's stack: no cleanup runs on SIGKILL
    stack, results = stack_frames(
        frames, reject=reject, checkpoint=checkpoint, resume=True, scratch=scratch
    )
    assert not os.listdir(scratch)  # the resumed run removed it
    assert [r.status for r in results] == ["stacked"] * len(frames)
    # Bit for bit: the partial stack is restored exactly, the rest added on.
    assert_same(stack, uninterrupted[reject])
    # No frame counted twice: each frame's context bit, once.
    context = stack.contexts["SCI"][0]
    bits = [(context >> k) & 1 for k in range(len(frames))]
    assert all(np.any(bit) for bit in bits)
    assert len(set(stack.meta["frames"])) == len(frames)
    assert stack.meta["masked"] == uninterrupted[reject].meta["masked"]
    assert not checkpoint.exists()  # removed once the stack is complete


@pytest.mark.slow
def test_the_stack_command_resumes(frames, uninterrupted, tmp_path, capsys):
    out = tmp_path / "stack.fits"
    # The command's checkpoint, with its options: beside the output.
    kill_half_way(frames, tmp_path / "stack.checkpoint", True)
    assert main(["stack", *frames, "--out", str(out), "--context"]) == 2  # not unasked
    err = capsys.readouterr().err
    assert "continue it with --resume, or start over with --overwrite" in err
    assert "resume=" not in err  # the command line's terms, not Python's
    assert main(["stack", *frames, "--out", str(out), "--context", "--resume"]) == 0
    expected = uninterrupted[True]
    with fits.open(out) as hdus:
        assert np.array_equal(hdus["SCI"].data, expected.images["SCI"], equal_nan=True)
        assert np.array_equal(hdus["CTX"].data, expected.contexts["SCI"])
    assert not (tmp_path / "stack.checkpoint").exists()


def test_a_checkpoint_is_kept_unless_resumed(frames, tmp_path):
    checkpoint = tmp_path / "cp"
    stack_frames(frames[:3], reject=False, checkpoint=checkpoint)
    assert not checkpoint.exists()  # complete: removed
    checkpoint.mkdir()
    (checkpoint / "run.json").write_text(json.dumps({"frames": []}))
    with pytest.raises(ValueError, match="checkpoint of an interrupted stack is there"):
        stack_frames(frames[:3], reject=False, checkpoint=checkpoint)
    with pytest.raises(ValueError, match=r"checkpoint is of another stack \(its frames, .*differ"):
        stack_frames(frames[:3], reject=False, checkpoint=checkpoint, resume=True)
    assert os.listdir(checkpoint) == ["run.json"]  # nothing of the user's lost


def test_a_folder_of_the_user_is_no_checkpoint(frames, tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="a folder with files in it, and no checkpoint"):
        stack_frames(frames[:3], reject=False, checkpoint=tmp_path)
    assert os.listdir(tmp_path) == ["notes.txt"]


def test_resume_needs_a_checkpoint_on_the_command_line(frames, tmp_path, capsys):
    argv = ["stack", *frames, "--out", str(tmp_path / "s.fits"), "--resume"]
    assert main([*argv, "--checkpoint-every", "0"]) == 2
    assert "--resume needs the checkpoint" in capsys.readouterr().err


@pytest.mark.slow
def test_a_frame_that_failed_before_the_medians_stays_out(frames, tmp_path):
    # The interrupted run could not read a frame; it reads now, but the
    # medians (and every frame's number) were made without it.
    folder = tmp_path / "sequence"
    folder.mkdir()
    copies = []
    for frame in frames:
        for path in (frame, frame.replace(".fits", ".offsets.fits")):
            if os.path.exists(path):
                shutil.copy(path, folder)
        copies.append(str(folder / os.path.basename(frame)))
    broken = pathlib.Path(copies[3])
    good = broken.read_bytes()
    broken.write_bytes(b"not a FITS file")
    expected, _ = stack_frames(copies, n_jobs=2)
    kill_half_way(copies, tmp_path / "cp", True)
    broken.write_bytes(good)
    stack, results = stack_frames(copies, checkpoint=tmp_path / "cp", resume=True)
    assert [r.status for r in results] == ["stacked"] * 3 + ["failed"] + ["stacked"] * 4
    assert "the interrupted run could not keep it" in results[3].message
    assert_same(stack, expected)


def test_resume_without_a_checkpoint_starts_over(frames, uninterrupted, tmp_path):
    stack, _ = stack_frames(frames, reject=False, checkpoint=tmp_path / "cp", resume=True)
    assert_same(stack, uninterrupted[False])


@pytest.mark.slow
def test_a_stack_on_a_cluster_resumes(frames, uninterrupted, tmp_path):
    distributed = pytest.importorskip("distributed")
    checkpoint = tmp_path / "stack.checkpoint"
    with (
        distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0"
        ) as cluster,
        distributed.Client(cluster) as client,
    ):
        kill_half_way(frames, checkpoint, True, scheduler=cluster.scheduler_address)
        # The shares saved their partial stacks; the medians are there.
        assert len(list(checkpoint.glob("share.*.json"))) == 2
        assert len(list(checkpoint.glob("median.*.npy"))) == 1
        with pytest.raises(ValueError, match="resume it on a cluster"):
            stack_frames(frames, checkpoint=checkpoint, resume=True)
        stack, results = stack_frames(frames, checkpoint=checkpoint, resume=True, client=client)
    assert [r.status for r in results] == ["stacked"] * len(frames)
    expected = uninterrupted[True]
    for name in expected.channels:
        image, local = stack.images[name], expected.images[name]
        assert np.nanmax(np.abs(image - local)) <= 1e-6 * np.nanmax(local)
        assert np.array_equal(stack.contexts[name], expected.contexts[name])  # each frame once
    assert stack.meta["frames"] == expected.meta["frames"]
    assert not checkpoint.exists()


def test_overwrite_replaces_an_interrupted_checkpoint(frames, tmp_path, capsys):
    out = tmp_path / "stack.fits"
    checkpoint = tmp_path / "stack.checkpoint"
    checkpoint.mkdir()
    (checkpoint / "run.json").write_text(json.dumps({"frames": []}))
    argv = ["stack", *frames[:3], "--out", str(out), "--no-reject"]
    assert main(argv) == 2
    assert "start over with --overwrite" in capsys.readouterr().err
    assert main([*argv, "--overwrite"]) == 0
    err = capsys.readouterr().err
    assert f"removed {checkpoint}, the checkpoint of an interrupted stack (--overwrite)" in err
    assert out.exists()
    assert not checkpoint.exists()


def interrupt(argv, directory, delay, after=None):
    """Run the command, send Ctrl-C to its group ``delay`` s in (after a line of stderr); return.

    ``after`` is a text its standard error shows first: the delay counts
    from then. Returns the exit status and the standard error.
    """
    script = pathlib.Path(sys.executable).with_name("astro-offsets")
    err = directory / "stderr.txt"
    with open(err, "w") as file:
        command = subprocess.Popen(
            [script, *argv],
            stdout=subprocess.DEVNULL,
            stderr=file,
            cwd=directory,
            start_new_session=True,  # its own group, as a terminal's command
        )
        while after is not None and after not in err.read_text() and command.poll() is None:
            time.sleep(0.02)
        try:
            command.wait(timeout=delay)
        except subprocess.TimeoutExpired:
            os.killpg(command.pid, signal.SIGINT)
        command.wait(timeout=60)
    return command.returncode, err.read_text()


@pytest.mark.slow
def test_ctrl_c_is_one_line_whenever_it_comes(frames, tmp_path):
    # Ctrl-C reaches every process of the terminal's foreground group, the
    # worker processes too: none of them prints a traceback, and the
    # command says it stopped, in one line. Early (the workers starting and
    # importing), then while frames are drizzled alone and stacked.
    moments = [(delay, None) for delay in (0.5, 0.7, 0.9)]
    moments += [(delay, "outlier rejection:") for delay in (0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6)]
    for attempt, (delay, after) in enumerate(moments):
        out = tmp_path / f"stack{attempt}.fits"
        argv = ["stack", *frames, "--out", str(out), "--jobs", "2"]
        status, err = interrupt(argv, tmp_path, delay, after)
        assert status == 130, (delay, after, err)
        assert "Traceback" not in err, (delay, err)
        assert "KeyboardInterrupt" not in err, (delay, err)
        lines = [line for line in err.splitlines() if line.startswith("astro-offsets:")]
        assert len(lines) == 1, (delay, err)
        assert lines[0].startswith("astro-offsets: interrupted"), (delay, err)
