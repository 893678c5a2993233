# floodguard — build, test and demo entry points. Run as root on Debian 12: `sudo make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
APT_PACKAGES := iptables ipset conntrack iproute2 libnetfilter-queue-dev sip-tester sipvicious kamailio tcpdump wireshark-common redis-server openssl \
	prometheus \
	python3-venv python3-dev build-essential \
	debootstrap systemd-container ansible-core ansible-lint vagrant openssh-client \
	vagrant-libvirt libvirt-daemon-system qemu-system-x86 qemu-utils rsync \
	clang libclang-rt-dev
STAMP := $(VENV)/.installed

.PHONY: deps system-deps venv test test-vm unit integration lint bench demo clean fuzz

deps: system-deps venv

# Install only what is missing, so repeated runs are quick and need no network.
system-deps:
	@missing=""; for p in $(APT_PACKAGES); do \
		dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
		if [ "$$(id -u)" != 0 ]; then echo "missing packages:$$missing (run as root: sudo make $(MAKECMDGOALS))" >&2; exit 1; fi; \
		echo "installing:$$missing"; \
		export DEBIAN_FRONTEND=noninteractive; apt-get update -qq && apt-get install -y -qq $$missing >/dev/null; \
		for svc in kamailio redis-server prometheus; do case " $$missing " in *" $$svc "*) \
			echo "$$svc is only a test peer here: not leaving its service running"; \
			systemctl disable --now $$svc >/dev/null 2>&1 || true;; esac; done; \
		case " $$missing " in *" prometheus "*) \
			systemctl disable --now prometheus-node-exporter >/dev/null 2>&1 || true;; esac; \
	fi

venv: $(STAMP)

# setup.py compiles the C sources and, with mypyc, the guard, the policy engine, the SIP parser
# and the registrar's request path
$(STAMP): pyproject.toml setup.py $(wildcard floodguard/*/*.c) $(wildcard floodguard/*/*.h) \
		floodguard/guard.py floodguard/guard_state.py floodguard/guard_actions.py \
		$(wildcard floodguard/policy/*.py) \
		$(wildcard floodguard/sip/*.py) $(wildcard floodguard/registrar/*.py)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

lint: venv
	$(VENV)/bin/ruff check floodguard tests bench

# The unit tier touches no kernel, namespace or fixed port: it runs on both cores (pytest-xdist).
UNIT := $(VENV)/bin/pytest -q -n 2 --durations=5 tests/unit

unit: deps
	$(UNIT)

# Everything but the Vagrant VMs (test-vm): on a host without usable KVM they fail, and under
# QEMU's software emulation they take over half an hour. The unit tier first, in parallel; then
# the rest one test at a time, since floods, timings and the deploy containers must not overlap.
# Both runs always run; the target fails when either did.
test: deps lint
	$(UNIT); unit=$$?; \
	$(VENV)/bin/pytest -q --durations=25 --ignore=tests/unit --ignore=tests/deploy/test_vagrant.py \
		tests; rest=$$?; test $$unit = 0 -a $$rest = 0

# The Vagrant lab booted for real (libvirt + KVM; fails loudly without it, see README "Vagrant
# lab"). FLOODGUARD_VAGRANT_ACCEL=tcg runs it under software emulation instead.
test-vm: deps
	$(VENV)/bin/pytest -q tests/deploy/test_vagrant.py

FUZZ_SECONDS ?= 300
# Coverage-guided fuzzing (atheris/libFuzzer) of the C code that reads attacker bytes, built with
# ASan+UBSan into build/fuzz: the SIP scan and the parser's C index differentially against the
# Python parsers, the NFQUEUE binding's datagram parsing against a Python reading. FUZZ_SECONDS per target; corpus in fuzz/.
fuzz: deps
	$(PY) fuzz/run.py --seconds $(FUZZ_SECONDS)

DEMO_DURATION ?= 5
# The attack lab: every scenario against real phones, with and without floodguard side by side,
# in private network namespaces only; a few minutes. REPORT=dir also writes an HTML report.
demo: deps
	$(VENV)/bin/floodguard lab --scenario all --duration $(DEMO_DURATION) $(if $(REPORT),--report $(REPORT))

bench: deps
	@for b in bench/bench_*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .hypothesis
