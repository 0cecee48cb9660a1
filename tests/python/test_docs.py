"""The documentation is true of the code: its examples run (docs/, examples/, README).

- docs/getting-started.md shows files of examples/ whole, each followed by what it prints:
  the file shown must be the file, and running it in a fresh directory must print exactly
  the output shown.
"""

import os
import re
import subprocess

import pytest

from conftest import PACKAGE_ROOT, PYTHON, child_env

ROOT = os.path.dirname(PACKAGE_ROOT)
DOCS = os.path.join(ROOT, "docs")


def read(path):
    with open(os.path.join(ROOT, path), encoding="utf-8") as f:
        return f.read()


# ---------------------------------------------------------------------------------------
# Getting started: whole files and their output
# ---------------------------------------------------------------------------------------

GETTING_STARTED = "docs/getting-started.md"


def blocks(page, marker):
    """{path: text} of the fenced blocks right after `<!-- marker: path -->` lines."""
    found = re.findall(r"^<!-- " + marker + r": (\S+) -->\n```[a-z]*\n(.*?)^```$",
                       read(page), re.M | re.S)
    return dict(found)


EXAMPLES = sorted(blocks(GETTING_STARTED, "example"))


def test_getting_started_shows_four_examples_and_the_output_of_each():
    assert EXAMPLES == ["examples/first_aggregate.py", "examples/first_projection.py",
                        "examples/first_store.py", "examples/first_subscriber.py"]
    assert sorted(blocks(GETTING_STARTED, "output")) == EXAMPLES


@pytest.mark.parametrize("path", EXAMPLES)
def test_getting_started_shows_the_example_file_as_it_is(path):
    assert blocks(GETTING_STARTED, "example")[path] == read(path)


@pytest.mark.parametrize("path", EXAMPLES)
def test_each_example_prints_what_getting_started_shows(path, tmp_path):
    p = subprocess.run([PYTHON, os.path.join(ROOT, path)], cwd=tmp_path, env=child_env(),
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    assert p.stderr == ""
    assert p.stdout == blocks(GETTING_STARTED, "output")[path]
    # run again in the same directory: each example starts afresh
    again = subprocess.run([PYTHON, os.path.join(ROOT, path)], cwd=tmp_path, env=child_env(),
                           capture_output=True, text=True, timeout=60)
    assert again.returncode == 0 and again.stdout == p.stdout, again.stderr
