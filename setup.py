"""Build and install cairn (distribution `cairn-events`, import name `cairn`).

The extension `cairn._cairn` is compiled from the C core (core/base, core/src), the Lua host (lua/)
and the CPython binding (bindings/python); it links the system's LMDB, jansson, xxHash and Lua 5.4:

    apt-get install liblmdb-dev libjansson-dev libxxhash-dev liblua5.4-dev
    pip install .                              # or, for development:
    python3 setup.py build_ext --inplace       # -> python/cairn/_cairn.*.so
"""

import glob
import os
import re

from setuptools import Extension, setup

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


ext = Extension(
    "cairn._cairn",
    sources=sources("core/base/*.c") + sources("core/src/*.c") + sources("lua/*.c") + sources("bindings/python/*.c"),
    include_dirs=[rel("core", "include"), rel("core", "base"), rel("core", "src"), rel("lua"), "/usr/include/lua5.4"],
    libraries=["lmdb", "jansson", "xxhash", "lua5.4", "pthread"],
    define_macros=[("_GNU_SOURCE", None)],
    depends=sources("core/include/*.h")
    + sources("core/base/*.h")
    + sources("core/src/*.h")
    + sources("lua/*.h")
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
    entry_points={"console_scripts": ["cairn = cairn.__main__:main"]},
    zip_safe=False,
    # keep setuptools out of build/, which belongs to CMake
    options={"build": {"build_base": "build-py"}},
)
