"""The console transcripts of the README and the docs are what the commands print.

A console block marked as checked (``.. checked: tests/test_transcripts.py``
before it in a page, ``<!-- checked: tests/test_transcripts.py -->`` in the
README) is run here: its commands, in the order of the page, in a folder of
their own that holds the two sequences of getting started, made by the
page's own examples. Each command's output, standard error and output
interleaved as on a terminal, must be the block's, but for the free disk
space; a line ``...`` stands for any lines.
"""

import contextlib
import doctest
import glob
import io
import os
import re
import shlex
import shutil
from pathlib import Path

import pytest

from astro_offsets._cli import main

ROOT = Path(__file__).parents[1]
MARK = "checked: tests/test_transcripts.py"
FREE = re.compile(r"\(\d+(?:\.\d+)? GB free\)")

# What each page's checked blocks hold at least, so that a block whose mark
# is lost is missed.
PAGES = {"README.md": 7, "docs/getting_started.rst": 10}


def checked_blocks(text):
    """Return the checked console blocks of a page: lists of (command, expected output)."""
    blocks = []
    rst = re.findall(
        rf"^\.\. {MARK}\n\n\.\. code-block:: console\n\n((?:(?:    .*)?\n)+)", text, re.M
    )
    md = re.findall(rf"^<!-- {MARK} -->\n```console\n(.*?)```", text, re.M | re.S)
    for body in [re.sub(r"^    ", "", b, flags=re.M) for b in rst] + md:
        commands = []
        for line in body.strip("\n").splitlines():
            if line.startswith("$ "):
                commands.append((line[2:], []))
            else:
                commands[-1][1].append(line)
        blocks.append(commands)
    return blocks


def expected_pattern(lines):
    """Return a regex of a command's documented output."""
    lines = [FREE.sub("(N GB free)", line) for line in lines]
    parts = [r"(?:.*\n)*?" if line == "..." else re.escape(line) + "\n" for line in lines]
    return re.compile("".join(parts))


class Shell:
    """Run a transcript's commands as a shell would, ``astro-offsets`` in this process."""

    def __init__(self):
        self.status = 0

    def __call__(self, command):
        words = shlex.split(command)
        out = io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
            if words[0] == "astro-offsets":
                argv = [w for word in words[1:] for w in (sorted(glob.glob(word)) or [word])]
                try:
                    self.status = main(argv)
                except SystemExit as exc:  # a usage error, from argparse
                    self.status = exc.code
            elif words == ["echo", "$?"]:
                print(self.status)
            elif words[0] == "mkdir":
                os.mkdir(words[1])
            elif words[0] == "cd":
                os.chdir(words[1])
            else:
                pytest.fail(f"the transcript checker cannot run {command!r}")
        return out.getvalue()


@pytest.fixture(scope="module")
def sequences(tmp_path_factory):
    """Return a folder with the two sequences of getting started, made by its examples."""
    text = (ROOT / "docs" / "getting_started.rst").read_text(encoding="utf-8")
    section = text.split("Two sequences to follow along\n", 1)[1].split("\nA FITS sequence\n", 1)[0]
    folder = tmp_path_factory.mktemp("sequences")
    namespace = {}
    with contextlib.chdir(folder):
        for example in doctest.DocTestParser().get_examples(section):
            exec(example.source, namespace)
    return folder


@pytest.mark.slow
@pytest.mark.parametrize("page", list(PAGES))
def test_transcripts(page, sequences, tmp_path, monkeypatch):
    blocks = checked_blocks((ROOT / page).read_text(encoding="utf-8"))
    assert sum(len(block) for block in blocks) >= PAGES[page], "checked blocks lost their mark?"
    shutil.copytree(sequences, tmp_path, dirs_exist_ok=True)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("COLUMNS", "80")  # argparse wraps its usage to the terminal
    shell = Shell()
    for block in blocks:
        for command, expected in block:
            output = FREE.sub("(N GB free)", shell(command))
            assert expected_pattern(expected).fullmatch(output), (
                f"{page}: $ {command}\n--- documented:\n"
                + "\n".join(expected)
                + f"\n--- printed:\n{output}"
            )
