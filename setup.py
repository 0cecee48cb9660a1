"""Build and install cairn (distribution `cairn-events`, import name `cairn`).

The extension `cairn._cairn` (the C core, the Lua host and the CPython binding) is built by
CMake, from CMakeLists.txt, the one description of the build: build_ext configures a CMake
tree in setuptools' build_temp for the interpreter running this file and builds its target
`cairn_python` straight into the directory setuptools installs from.  It needs cmake (3.20 or
later), pkg-config, a C compiler and the system's LMDB, jansson, xxHash, libsodium and Lua 5.4:

    apt-get install cmake pkg-config gcc liblmdb-dev libjansson-dev libxxhash-dev liblua5.4-dev libsodium-dev
    pip install .                              # or, for development:
    python3 setup.py build_ext --inplace       # -> python/cairn/_cairn.*.so

CMAKE=/path/to/cmake picks another cmake (default: Debian's /usr/bin/cmake, else the one on
PATH).
"""

import os
import re
import shutil
import subprocess
import sys

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext as _build_ext

HERE = os.path.dirname(os.path.abspath(__file__))


def version():
    with open(os.path.join(HERE, "python", "cairn", "__init__.py"), encoding="utf-8") as f:
        m = re.search(r'^__version__\s*=\s*"([^"]+)"', f.read(), re.M)
    return m.group(1) if m else "0.0.0"


def cmake_program():
    cmake = os.environ.get("CMAKE")
    if not cmake:
        cmake = "/usr/bin/cmake" if os.access("/usr/bin/cmake", os.X_OK) else shutil.which("cmake")
    if not cmake:
        sys.exit("cairn: cmake not found (apt-get install cmake, or set CMAKE=/path/to/cmake)")
    return cmake


class CMakeExtension(Extension):
    """An extension whose sources CMake knows; `target` is its CMake target."""

    def __init__(self, name, target):
        super().__init__(name, sources=[])
        self.target = target


class build_ext(_build_ext):
    """Builds each CMakeExtension by configuring and building CMakeLists.txt's target."""

    def build_extension(self, ext):
        if not isinstance(ext, CMakeExtension):
            return super().build_extension(ext)
        out = os.path.dirname(os.path.abspath(self.get_ext_fullpath(ext.name)))
        tree = os.path.join(os.path.abspath(self.build_temp), "cmake")
        os.makedirs(out, exist_ok=True)
        cmake = cmake_program()
        config = "Debug" if self.debug else "Release"
        configure = [cmake, "-S", HERE, "-B", tree, f"-DCMAKE_BUILD_TYPE={config}",
                     f"-DPython3_EXECUTABLE={sys.executable}", "-DCAIRN_PYTHON=ON",
                     "-DCAIRN_TESTS=OFF", f"-DCAIRN_PYTHON_OUTPUT_DIR={out}"]
        jobs = self.parallel or os.cpu_count() or 1
        build = [cmake, "--build", tree, "--target", ext.target, "-j", str(jobs)]
        for cmd in (configure, build):
            print(" ".join(cmd), flush=True)
            subprocess.run(cmd, check=True)


setup(
    name="cairn-events",
    version=version(),
    description="An embedded event store on LMDB, with Lua aggregates and projections",
    long_description=__doc__,
    long_description_content_type="text/plain",
    python_requires=">=3.11",
    package_dir={"": "python"},
    packages=["cairn", "cairn.cli"],
    package_data={"cairn": ["py.typed", "*.pyi"]},
    ext_modules=[CMakeExtension("cairn._cairn", target="cairn_python")],
    cmdclass={"build_ext": build_ext},
    entry_points={"console_scripts": ["cairn = cairn.cli:entry"]},
    # the command line draws tables, colour and progress bars with rich (README, "Dependencies")
    install_requires=["rich==15.0.0"],
    zip_safe=False,
    # keep setuptools out of build/, which belongs to CMake
    options={"build": {"build_base": "build-py"}},
)
