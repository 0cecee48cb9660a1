"""The README's quick start runs as printed, and runs again: a second run must not trip over
the first run's store (issue 11 item 15)."""

import os
import re
import subprocess

from conftest import PYTHON, child_env

README = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "README.md")


def quick_start():
    with open(README, encoding="utf-8") as f:
        section = f.read().split("## Quick start", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_the_readme_quick_start_runs_twice(tmp_path):
    code, outs = quick_start(), []
    for _ in range(2):  # in one working directory, as a reader would run it
        p = subprocess.run([PYTHON, "-c", code], cwd=tmp_path, env=child_env(),
                           capture_output=True, text=True, timeout=120)
        assert p.returncode == 0, p.stderr
        outs.append(p.stdout)
    lines = outs[0].splitlines()
    assert lines[0] == "1 2" and "conflict: 0 1" in lines  # what its comments say
    def no_times(out):
        return [re.sub(r" \d{4}-\d\d-\d\d \d\d:\d\d:\d\d(\.\d+)?\+00:00$", " T", s)
                for s in out.splitlines()]
    assert no_times(outs[0]) == no_times(outs[1])
    assert os.listdir(tmp_path) == []  # a fresh store each run, removed afterwards
