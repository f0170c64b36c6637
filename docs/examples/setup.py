# Build the example stage: python setup.py build_ext --inplace
from Cython.Build import cythonize
from setuptools import setup

from vnfkit.cython_support import extension, get_include

setup(
    name="ttl-guard",
    ext_modules=cythonize([extension("ttl_guard", ["ttl_guard.pyx"], link_engine=False)],
                          include_path=get_include(), language_level=3),
)
