"""The documentation is true of the code: its examples run (docs/, examples/, README).

- docs/getting-started.md shows files of examples/ whole, each followed by what it prints:
  the file shown must be the file, and running it in a fresh directory must print exactly
  the output shown.
- docs/python-api.md (and the other pages with `>>>` examples) are doctests, run with a
  fresh temporary directory as the working directory: a wrong example fails `make test`.
  docs/lua.md's Lua blocks are given to its doctests by name (`LUA["account"]`), so each of
  them is defined in a store and run.
  python-api.md must also name every public name of `cairn` and of its classes.
- Relative links between the pages and the README resolve, anchors included.
- docs/c-api.md shows examples/hello.c whole with what it prints (ctest builds and runs it
  as example_hello) and names every function, type and macro of cairn.h.
"""

import doctest
import logging
import os
import re
import subprocess

import pytest

import cairn
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


def test_the_cairn_commands_of_getting_started_work_on_the_stores_its_examples_leave(tmp_path):
    for path in EXAMPLES:
        subprocess.run([PYTHON, os.path.join(ROOT, path)], cwd=tmp_path, env=child_env(),
                       check=True, capture_output=True, timeout=60)
    (commands,) = re.findall(r"^<!-- commands -->\n```sh\n(.*?)^```$", read(GETTING_STARTED), re.M | re.S)
    lines = [line.split("#")[0].strip() for line in commands.splitlines() if line.strip()]
    assert len(lines) == 6 and all(line.startswith("cairn ") for line in lines)
    for line in lines:
        p = subprocess.run([PYTHON, "-m", "cairn"] + line.split()[1:], cwd=tmp_path,
                           env=child_env(), capture_output=True, text=True, timeout=60)
        assert p.returncode == 0, f"{line}: exit {p.returncode}: {p.stderr}"
        assert p.stdout.strip(), f"{line} printed nothing"


# ---------------------------------------------------------------------------------------
# Doctests
# ---------------------------------------------------------------------------------------

DOCTEST_PAGES = ["docs/concepts.md", "docs/lua.md", "docs/operations.md", "docs/python-api.md"]


@pytest.mark.parametrize("page", DOCTEST_PAGES)
def test_the_examples_of_the_page_run_as_doctests(page, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    # an example that configures the "cairn" logger must not leave it so for other tests
    log = logging.getLogger("cairn")
    handlers, level = list(log.handlers), log.level
    try:
        run_doctests(page)
    finally:
        log.handlers[:] = handlers
        log.setLevel(level)


def run_doctests(page):
    # the page's Lua blocks, by the name of their <!-- lua: NAME --> marker, as LUA[NAME]
    result = doctest.testfile(
        os.path.join(ROOT, page), module_relative=False,
        globs={"cairn": cairn, "LUA": blocks(page, "lua")},
        optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE, report=True, verbose=False)
    assert result.attempted > 0
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples of {page} failed (see above)"


def test_every_lua_block_of_the_lua_guide_is_named_and_run():
    page = read("docs/lua.md")
    fenced = re.findall(r"^```lua$", page, re.M)
    named = blocks("docs/lua.md", "lua")
    assert len(named) == len(fenced) > 5, "a ```lua block without a <!-- lua: NAME --> marker"
    for name in named:
        assert f'LUA["{name}"]' in page, f"the Lua block {name} is not used by any example"


def public_names():
    """Every public name of `cairn` and of the classes it exports, as `name` or `Class.attr`."""
    names = set()
    for name in cairn.__all__:
        names.add(name)
        obj = getattr(cairn, name)
        if isinstance(obj, type) and not issubclass(obj, BaseException):
            for attr in dir(obj):
                if not attr.startswith("_") and attr not in ("count", "index", "n_fields",
                                                              "n_sequence_fields", "n_unnamed_fields"):
                    names.add(f"{name}.{attr}")
    return names


def test_python_api_reference_names_every_public_name():
    page = read("docs/python-api.md")
    # A name is documented by a heading that names it, or by a bullet that starts with it
    # (`Store.head()`, `store.head()` or `head` under the class's heading), several names
    # before the bullet's first ": " counting each.
    documented = set()
    cls = None
    for line in page.splitlines():
        m = re.match(r"^#+ .*?`(?:cairn\.)?(\w+)", line)
        if m:
            cls = m.group(1)
            documented.add(cls)
        if line.startswith("- `"):
            lead = line.split(": ", 1)[0]
            for name in re.findall(r"`(?:cairn\.|store\.|[A-Z]\w*\.)?(\w+)", lead):
                documented.add(name)
                if cls:
                    documented.add(f"{cls}.{name}")
    missing = sorted(n for n in public_names() if n not in documented)
    assert not missing, f"docs/python-api.md does not document: {', '.join(missing)}"


# ---------------------------------------------------------------------------------------
# The C API page: the example program and every name of cairn.h
# ---------------------------------------------------------------------------------------

C_API = "docs/c-api.md"
EXAMPLE_HELLO = os.path.join(ROOT, "build", "example_hello")


def test_c_api_shows_examples_hello_c_as_it_is():
    assert blocks(C_API, "example") == {"examples/hello.c": read("examples/hello.c")}


@pytest.mark.skipif(not os.path.exists(EXAMPLE_HELLO), reason="build/example_hello not built (make build)")
def test_examples_hello_c_prints_what_the_c_api_page_shows(tmp_path):
    p = subprocess.run([EXAMPLE_HELLO, "hello-store"], cwd=tmp_path, capture_output=True,
                       text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    assert p.stdout == blocks(C_API, "output")["examples/hello.c"]


def header_names():
    """Every function, type and macro cairn.h declares."""
    text = re.sub(r"/\*.*?\*/", "", read("core/include/cairn.h"), flags=re.S)
    names = set(re.findall(r"\b(cairn_\w+)\s*\(", text))             # functions
    names |= set(re.findall(r"\}\s*(cairn_\w+)\s*;", text))           # typedef struct {...} name;
    names |= set(re.findall(r"typedef\s+struct\s+\w+\s+(cairn_\w+)\s*;", text))
    names |= set(re.findall(r"\(\*(cairn_\w+)\)", text))               # function pointer types
    names |= set(re.findall(r"#define\s+(CAIRN_\w+)", text)) - {"CAIRN_H"}
    names |= set(re.findall(r"\b(CAIRN_(?:DURABLE|SCRIPT)_\w+)\b", text))  # enum values
    return names


def test_c_api_page_names_everything_cairn_h_declares():
    page = read(C_API)
    missing = sorted(n for n in header_names() if not re.search(r"`" + n + r"\b", page))
    assert len(header_names()) > 80
    assert not missing, f"docs/c-api.md does not name: {', '.join(missing)}"


# ---------------------------------------------------------------------------------------
# Links
# ---------------------------------------------------------------------------------------

PAGES = ["README.md"] + sorted(f"docs/{f}" for f in os.listdir(DOCS) if f.endswith(".md"))


def anchors(text):
    """GitHub's anchors of a page's headings."""
    out = set()
    for h in re.findall(r"^#+ (.+)$", text, re.M):
        a = re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-")
        out.add(a)
    return out


@pytest.mark.parametrize("page", PAGES)
def test_relative_links_resolve(page):
    text = read(page)
    base = os.path.dirname(os.path.join(ROOT, page))
    bad = []
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if re.match(r"[a-z]+:", target):
            continue
        path, _, anchor = target.partition("#")
        full = os.path.normpath(os.path.join(base, path)) if path else os.path.join(ROOT, page)
        if not os.path.exists(full):
            bad.append(target)
        elif anchor and full.endswith(".md") and anchor not in anchors(open(full, encoding="utf-8").read()):
            bad.append(target)
    assert not bad, f"{page}: links that lead nowhere: {bad}"
