"""Build support for per-packet stages written in Cython against the vnfkit engine (docs/cython.md).

An installed vnfkit ships ``vnfkit/include/vnfkit.pxd`` (the declarations to ``cimport``), the engine
headers (``vnfkit/include/vnfkit/**.hpp``) and the engine library (``vnfkit/lib/libvnfkit_core.a``,
needed only for non-inline engine functions such as ``crc32c_bytes`` or ``drop_reason_name``).
In a developer tree (``cmake --preset dev``) the same things are found in ``src/cython``,
``cpp/include`` and ``build/dev/cpp``. A ``setup.py`` for one stage::

    from setuptools import setup
    from Cython.Build import cythonize
    from vnfkit.cython_support import extension
    setup(ext_modules=cythonize([extension("my_stage", ["my_stage.pyx"])],
                                include_path=vnfkit.cython_support.get_include()))
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = ["get_include", "get_library_dir", "extension", "CXX_FLAGS"]

_PKG = Path(__file__).resolve().parent
_ROOT = _PKG.parent.parent  # a developer checkout: <root>/python/vnfkit

#: Compiler flags a stage needs (the engine headers are C++20).
CXX_FLAGS = ["-std=c++20", "-O3"]


def get_include() -> list[str]:
    """Directories for both the Cython include path (vnfkit.pxd) and the C++ include path."""
    inc = _PKG / "include"
    if (inc / "vnfkit.pxd").is_file():
        return [str(inc)]
    pxd_dir, hdr_dir = _ROOT / "src" / "cython", _ROOT / "cpp" / "include"
    if (pxd_dir / "vnfkit.pxd").is_file() and hdr_dir.is_dir():
        return [str(pxd_dir), str(hdr_dir)]
    raise FileNotFoundError("vnfkit.pxd not found: install vnfkit with `pip install .` (it ships vnfkit/include)")


def get_library_dir() -> str:
    """Directory holding libvnfkit_core.a (link with ``-lvnfkit_core``)."""
    for d in (_PKG / "lib", _ROOT / "build" / "dev" / "cpp", _ROOT / "build" / "release" / "cpp"):
        if (d / "libvnfkit_core.a").is_file():
            return str(d)
    raise FileNotFoundError("libvnfkit_core.a not found: install vnfkit with `pip install .`")


def extension(name: str, sources: list[str], *, link_engine: bool = True, **kwargs: Any) -> Any:
    """A setuptools Extension for a Cython stage: C++20, the vnfkit include dirs and (if
    `link_engine`) the engine library. Extra keyword arguments go to ``Extension``."""
    from setuptools import Extension  # type: ignore[import-untyped,unused-ignore]

    include_dirs = list(kwargs.pop("include_dirs", [])) + get_include()
    extra = list(kwargs.pop("extra_compile_args", [])) + CXX_FLAGS
    libs = list(kwargs.pop("libraries", []))
    lib_dirs = list(kwargs.pop("library_dirs", []))
    if link_engine:
        libs.append("vnfkit_core")
        lib_dirs.append(get_library_dir())
    return Extension(name, sources, language="c++", include_dirs=include_dirs, extra_compile_args=extra,
                     libraries=libs, library_dirs=lib_dirs, **kwargs)
