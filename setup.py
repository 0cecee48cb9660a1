"""Build and install cairn (distribution `cairn-events`, import name `cairn`).

The extension `cairn._cairn` is compiled from the C core (core/base, core/src), the Lua host (lua/, when
present) and the CPython binding (bindings/python); it links the system's LMDB, jansson,
xxHash (and Lua 5.4 when the Lua host is present):

    apt-get install liblmdb-dev libjansson-dev libxxhash-dev liblua5.4-dev
    pip install .                              # or, for development:
    python3 setup.py build_ext --inplace       # -> python/cairn/_cairn.*.so
"""

import glob
import os
import re

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext as _build_ext

HERE = os.path.dirname(os.path.abspath(__file__))


def rel(*parts):
    return os.path.join(*parts)


def sources(pattern):
    # setuptools wants paths relative to setup.py; sorted for reproducible builds.
    return sorted(os.path.relpath(p, HERE) for p in glob.glob(os.path.join(HERE, pattern)))


def version():
    with open(os.path.join(HERE, "python", "cairn", "__init__.py"), encoding="utf-8") as f:
        m = re.search(r'^__version__\s*=\s*"([^"]+)"', f.read(), re.M)
    return m.group(1) if m else "0.0.0"


include_dirs = [rel("core", "include"), rel("core", "base"), rel("core", "src")]
libraries = ["lmdb", "jansson", "xxhash", "pthread"]
lua_sources = sources("lua/*.c")
if lua_sources:
    include_dirs += [rel("lua"), "/usr/include/lua5.4"]
    libraries.append("lua5.4")

ext = Extension(
    "cairn._cairn",
    sources=sources("core/base/*.c") + sources("core/src/*.c") + lua_sources + sources("bindings/python/*.c"),
    include_dirs=include_dirs,
    libraries=libraries,
    define_macros=[("_GNU_SOURCE", None)],
    depends=sources("core/include/*.h")
    + sources("core/base/*.h")
    + sources("core/src/*.h")
    + sources("lua/*.h")
    + sources("lua/*.lua")
    + sources("bindings/python/*.h"),
    extra_compile_args=[
        "-std=gnu11",
        "-fvisibility=hidden",  # only PyInit__cairn is exported
        "-Wall",
        "-Wextra",
        "-Wshadow",
        "-Wstrict-prototypes",
    ],
)


def embed_lua(script, out, name):
    """lua/NAME.lua -> a C header, as scripts/embed.cmake makes it for the CMake build:
    `static const char cairn_lua_NAME[]` (NUL-terminated) and `cairn_lua_NAME_len`."""
    with open(script, "rb") as f:
        data = f.read()
    rows = [
        "".join(f"0x{b:02x}," for b in data[i : i + 12]) for i in range(0, len(data), 12)
    ]
    text = (
        f"/* Generated from lua/{os.path.basename(script)} by setup.py; do not edit. */\n"
        f"static const char cairn_lua_{name}[] = {{\n    "
        + "\n    ".join(rows)
        + "0x00};\n"
        + f"static const size_t cairn_lua_{name}_len = {len(data)};\n"
    )
    try:
        with open(out, encoding="utf-8") as f:
            if f.read() == text:
                return  # unchanged: keep the timestamp, avoid a rebuild
    except OSError:
        pass
    with open(out, "w", encoding="utf-8") as f:
        f.write(text)


class build_ext(_build_ext):
    """Embeds lua/*.lua as generated headers before compiling (the CMake build does the same
    with scripts/embed.cmake)."""

    def run(self):
        scripts = sources("lua/*.lua")
        if scripts:
            gen = os.path.join(self.build_temp, "generated")
            os.makedirs(gen, exist_ok=True)
            for script in scripts:
                name = os.path.splitext(os.path.basename(script))[0]
                embed_lua(os.path.join(HERE, script), os.path.join(gen, f"{name}_lua.h"), name)
            for e in self.extensions:
                if gen not in e.include_dirs:
                    e.include_dirs.append(gen)
        super().run()


entry_points = {}
if os.path.exists(os.path.join(HERE, "python", "cairn", "__main__.py")):
    entry_points["console_scripts"] = ["cairn = cairn.__main__:main"]

setup(
    name="cairn-events",
    version=version(),
    description="An embedded event store on LMDB, with Lua aggregates and projections",
    long_description=__doc__,
    long_description_content_type="text/plain",
    python_requires=">=3.11",
    package_dir={"": "python"},
    packages=["cairn"],
    package_data={"cairn": ["py.typed", "*.pyi"]},
    ext_modules=[ext],
    cmdclass={"build_ext": build_ext},
    entry_points=entry_points,
    zip_safe=False,
    # keep setuptools out of build/, which belongs to CMake
    options={"build": {"build_base": "build-py"}},
)
