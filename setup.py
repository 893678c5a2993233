"""C extensions of floodguard's per-packet path; everything else is in pyproject.toml."""

from setuptools import Extension, setup

CFLAGS = ["-O2", "-Wall", "-Wextra", "-Werror=implicit-function-declaration", "-std=gnu11"]

setup(
    ext_modules=[
        Extension("floodguard.sip._scan", ["floodguard/sip/_scan.c"], extra_compile_args=CFLAGS),
        Extension("floodguard.kernel._nfq", ["floodguard/kernel/_nfq.c"],
                  extra_compile_args=CFLAGS),
    ],
)
