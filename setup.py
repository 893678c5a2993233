"""C extensions of floodguard's per-packet path; everything else is in pyproject.toml."""

import os

from setuptools import Extension, setup

HERE = os.path.dirname(os.path.abspath(__file__))
# The build folder's path stays out of the objects, so a wheel built from the same sources in
# another folder is byte-identical (the Ansible role rebuilds it on every run).
CFLAGS = ["-O2", "-Wall", "-Wextra", "-Werror=implicit-function-declaration", "-std=gnu11",
          f"-ffile-prefix-map={HERE}=."]

setup(
    ext_modules=[
        Extension("floodguard.sip._scan", ["floodguard/sip/_scan.c"], extra_compile_args=CFLAGS),
        Extension("floodguard.kernel._nfq", ["floodguard/kernel/_nfq.c"],
                  extra_compile_args=CFLAGS),
    ],
)
