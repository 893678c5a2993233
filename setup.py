"""C extensions of floodguard's per-packet path; everything else is in pyproject.toml.

Hand-written C: the NFQUEUE binding, the SIP scan and the registrar's batched UDP reads
and writes. Compiled with mypyc from the typed
Python sources (which stay the reference and run as they are when imported from a checkout
without a build): the guard and the policy engine with its tables, the SIP parser and the
registrar's request path.
"""

import os

from mypyc.build import mypycify
from setuptools import Extension, setup

HERE = os.path.dirname(os.path.abspath(__file__))
# The build folder's path stays out of the objects, so a wheel built from the same sources in
# another folder is byte-identical (the Ansible role rebuilds it on every run).
REPRODUCIBLE = [f"-ffile-prefix-map={HERE}=."]
CFLAGS = ["-O2", "-Wall", "-Wextra", "-Werror=implicit-function-declaration", "-std=gnu11",
          *REPRODUCIBLE]
# Per-packet Python (tests/conftest.py refuses a build older than these sources).
COMPILED = [
    "floodguard/guard.py", "floodguard/guard_state.py", "floodguard/guard_actions.py",
    *(f"floodguard/policy/{name}.py" for name in (
        "accounts", "admission", "baseline", "buckets", "escalation", "engine", "holds", "learning",
        "lru", "netset", "nonces", "pair_ports", "pairs", "suspension", "tables", "verdict")),
    # the built-in registrar's path for every request: parse, digest check, answer, the
    # binding it updates and the liveness schedule it joins
    "floodguard/sip/message.py", "floodguard/sip/reference_index.py", "floodguard/sip/fields.py",
    "floodguard/sip/framing.py", "floodguard/sip/digest.py",
    *(f"floodguard/registrar/{name}.py" for name in (
        "auth", "bindings", "core", "liveness", "responses")),
]

compiled = mypycify(COMPILED, opt_level="3", debug_level="0")
for ext in compiled:
    ext.extra_compile_args = [*ext.extra_compile_args, *REPRODUCIBLE]

setup(
    ext_modules=[
        Extension("floodguard.sip._scan", ["floodguard/sip/_scan.c"], extra_compile_args=CFLAGS,
                  depends=["floodguard/sip/_scan_common.h"]),
        Extension("floodguard.sip._index", ["floodguard/sip/_index.c"], extra_compile_args=CFLAGS,
                  depends=["floodguard/sip/_scan_common.h"]),
        Extension("floodguard.registrar._udp", ["floodguard/registrar/_udp.c"],
                  extra_compile_args=CFLAGS),
        Extension("floodguard.kernel._nfq", ["floodguard/kernel/_nfq.c"],
                  extra_compile_args=CFLAGS,
                  depends=["floodguard/kernel/_nfq_netlink.h", "floodguard/kernel/_nfq_packets.h"]),
        *compiled,
    ],
)
