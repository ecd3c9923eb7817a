"""Scratch directories: removed at the end, and after their process is killed, by the next one."""

import os
import signal
import subprocess
import sys
import textwrap

import pytest

from astro_offsets._utils.scratch import ScratchDirectory

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="no locks to sweep by")

PREFIX = "astro_offsets-test-"


def owner_process(parent, then):
    """Start a process that makes a scratch directory in ``parent`` and prints it, then ``then``."""
    script = textwrap.dedent(
        f"""
        import os, signal, sys
        from astro_offsets._utils.scratch import ScratchDirectory

        scratch = ScratchDirectory({PREFIX!r}, {str(parent)!r})
        open(os.path.join(scratch.path, "data.npy"), "wb").write(b"x" * 1000)
        print(scratch.path, flush=True)
        {then}
        """
    )
    process = subprocess.Popen(
        [sys.executable, "-c", script],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=parent,  # not the source tree: the package is the installed one
    )
    return process, process.stdout.readline().strip()


def test_removed_at_the_end(tmp_path):
    scratch = ScratchDirectory(PREFIX, tmp_path)
    assert os.path.dirname(scratch.path) == str(tmp_path)
    scratch.remove()
    assert not os.listdir(tmp_path)
    process, path = owner_process(tmp_path, "")  # ends normally: removed at exit
    process.communicate("")
    assert process.returncode == 0
    assert not os.path.exists(path)


def test_a_killed_process_scratch_is_removed_by_the_next(tmp_path):
    process, killed = owner_process(tmp_path, "os.kill(os.getpid(), signal.SIGKILL)")
    process.communicate("")
    assert process.returncode == -signal.SIGKILL
    assert os.path.exists(os.path.join(killed, "data.npy"))  # left behind
    scratch = ScratchDirectory(PREFIX, tmp_path)
    assert not os.path.exists(killed)
    assert os.listdir(tmp_path) == [os.path.basename(scratch.path)]


def test_a_live_process_scratch_is_left(tmp_path):
    process, alive = owner_process(tmp_path, "sys.stdin.read()")
    try:
        ScratchDirectory(PREFIX, tmp_path).remove()
        assert os.path.exists(os.path.join(alive, "data.npy"))
    finally:
        process.communicate("")
    assert process.returncode == 0
    assert not os.path.exists(alive)


def test_others_are_left(tmp_path):
    # An earlier version's (no owner file), another host's, another name.
    earlier = tmp_path / f"{PREFIX}earlier"
    earlier.mkdir()
    elsewhere = tmp_path / f"{PREFIX}elsewhere"
    elsewhere.mkdir()
    (elsewhere / ".owner").write_text("another-host.example")
    users = tmp_path / "users-folder"
    users.mkdir()
    (users / ".owner").write_text(os.uname().nodename)
    ScratchDirectory(PREFIX, tmp_path).remove()
    assert sorted(os.listdir(tmp_path)) == sorted([earlier.name, elsewhere.name, users.name])


def test_what_others_leave_neither_blocks_nor_fails(tmp_path):
    # Anyone may write in a temporary directory: a FIFO would block a
    # reader, a directory fail one.
    fifo = tmp_path / f"{PREFIX}fifo"
    fifo.mkdir()
    os.mkfifo(fifo / ".owner")
    folder = tmp_path / f"{PREFIX}folder"
    folder.mkdir()
    (folder / ".owner").mkdir()
    ScratchDirectory(PREFIX, tmp_path).remove()
    assert sorted(os.listdir(tmp_path)) == sorted([fifo.name, folder.name])


def test_a_filesystem_without_locks(tmp_path, monkeypatch):
    import errno
    import fcntl

    def no_locks(fd, operation):
        raise OSError(errno.ENOSYS, "flock not supported")

    monkeypatch.setattr(fcntl, "flock", no_locks)
    scratch = ScratchDirectory(PREFIX, tmp_path)
    assert os.listdir(scratch.path) == []  # unlocked: no owner file to sweep by
    scratch.remove()
    assert os.listdir(tmp_path) == []


def test_a_forked_child_leaves_its_parents_directory(tmp_path):
    script = textwrap.dedent(
        f"""
        import os, sys
        from astro_offsets._utils.scratch import ScratchDirectory

        scratch = ScratchDirectory({PREFIX!r}, {str(tmp_path)!r})
        pid = os.fork()
        if pid == 0:
            sys.exit(0)  # the child's exit runs the finalizers it inherited
        os.waitpid(pid, 0)
        print(os.path.isdir(scratch.path))
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path, check=True
    )
    assert done.stdout.split() == ["True"]
    assert os.listdir(tmp_path) == []  # the parent's exit removed it
