# Quick start: `make run` starts the main job, `make test` runs the whole suite.
# Each target creates .venv on first use and re-installs only when pyproject.toml changes.
# The strict editable install links each file; we then link the four package folders whole,
# so a module added later is importable (and visible to mypy) without a re-install.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PKG_DIRS := protocol storage node tools
FILES_ID := $(shell cat pyproject.toml | cksum | cut -d' ' -f1)
STAMP := $(VENV)/.installed-$(FILES_ID)

.PHONY: run test lint venv browser clean _install netlab fuzz fuzz-api

$(STAMP):
	@flock .venv.lock $(MAKE) --no-print-directory _install

_install:
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@test -f $(STAMP) || { \
	  echo "installing hearthmesh into $(VENV) ..." && \
	  $(PY) -m pip install -q --disable-pip-version-check --upgrade pip >$(VENV)/install.log 2>&1 && \
	  $(PY) -m pip install -q --disable-pip-version-check -e '.[dev]' \
	    --config-settings editable_mode=strict >>$(VENV)/install.log 2>&1 && \
	  for pkg in $(PKG_DIRS); do \
	    link=$$(echo build/__editable__.hearthmesh-*/hearthmesh)/$$pkg && \
	    rm -rf $$link && ln -s $(CURDIR)/$$pkg $$link || exit 1; done && \
	  rm -f $(VENV)/.installed-* && touch $(STAMP); } || { cat $(VENV)/install.log; exit 1; }

venv: $(STAMP)

# A home node with its own data dir (./data/node, created on first run), LMDB and the client
# API on 127.0.0.1:8470; Ctrl-C stops it cleanly. Override with e.g. RUN_ARGS="--api 127.0.0.1:9000".
RUN_ARGS ?=
run: $(STAMP)
	$(VENV)/bin/hearthmesh run --data-dir data/node $(RUN_ARGS)

# Four pytest-xdist workers on 2 cores: many tests wait on the network, timers and node
# processes, not the CPU (1,626 tests, tmp_path on tmpfs). Each worker's start and collection
# costs ~2.8 s of CPU (imports: libp2p ~0.5 s, playwright ~0.2 s), and no test starts until
# every worker has collected (4-19 s after `make test` in this session's runs, more with more
# workers and load); a worker that runs browser tests keeps one Chromium (~14 s of CPU for all
# 18 on one; worksteal spreads them over 2-3 workers at -n 6 or 8, ~1 s of CPU each more).
# The workers collect garbage as node processes do (tests/conftest.py, tools/process_gc.py).
# Whole-suite runs on the shared machine (2026-12-05, session 12; nice 10, the heavy lock;
# pytest's wall, then user+sys of `make test`, then the load at the start and end of the run),
# in the order run; main is 4bb1602, branch is s12-suite: main -n 4 231 s, 210 s (9, 10; others'
# runs pushed the load to 50 meanwhile); main -n 8 152 s, 217 s (25, 15); main -n 6 136 s, 193 s
# (12, 10); main -n 4 166 s, 184 s (50, 11); branch -n 8 143 s, 207 s (45, 19; 1 failed: a lost
# click in test_web_screens, fixed); main -n 4 113 s, 162 s (7, 6); branch -n 6 from a fresh
# clone (.ci/run) 113 s (36, 9); branch -n 6 111 s, 182 s (30, 13; 1 failed: test_gossip_router's
# IHAVE count, a race, fixed); branch -n 6 125 s, 188 s (35, 14); main -n 4 121 s, 181 s (14, 5);
# branch -n 4 114 s, 156 s (39, 10); main -n 4 128 s, 168 s (6, 8); branch -n 4 115 s, 163 s
# (8, 6). At -n 4 the branch (the workers' garbage collector) used 5-25 s less CPU than main.
# In the pairs run next to each other, -n 6 was no faster than -n 4 (its load was higher) and
# cost 7-20 s more CPU, and at -n 6 and 8 load brought out two test races: -n 4 stays. The tests'
# own span was 107 s at -n 4 on a quiet machine (main, 148 s of CPU in the per-test log): 90 s
# needs the CPU cut, not more workers. On a busy machine, fewer workers time out less:
# TEST_ARGS="-n 2". Session 13 (same form; main is 92f0b25, branch is s13-nodestart), in the
# order run: main 163 s, 195 s (14, 12); branch 203 s, 180 s (9, 8; 1 failed: a 60 s timeout in
# test_recall_convergence, waiting for a purge on an online home; alone, 8 runs each, it took
# 3-11 s on main and 3-7 s on the branch); main 182 s, 179 s (69, 14); branch 177 s, 184 s
# (66, 16); the branch from a fresh clone (.ci/run, passed) 318 s (8, 22). The per-test logs'
# CPU, main 169.8 / 165.2 s, branch 165.7 / 170.1 s: no change beyond the noise. An in-process
# node's start and stop costs ~12-15 ms of CPU (key generation ~0.1 % of it), ~2-4 % of the
# in-process tests' CPU: their cost is the traffic they make. mDNS tests take a machine-wide
# lock (tests/conftest.py); TEST_ARGS="-n 0" runs serially. HYPOTHESIS_PROFILE=quick: see
# tests/conftest.py.
TEST_ARGS ?= -n 4
# The NAT tests build network namespaces with iproute2 and nftables (tests/integration/netlab.py),
# and the UPnP test runs miniupnpd in a router's namespace: installed from Debian when missing
# and we are root, so a bare CI machine runs them, not skips. (Debian's miniupnpd package does
# not start a daemon in a container: policy-rc.d; the lab starts its own per router.)
NETLAB_PKGS := nftables iproute2 miniupnpd
netlab:
	@command -v nft >/dev/null && command -v ip >/dev/null && command -v miniupnpd >/dev/null || { \
	  [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
	  echo "installing $(NETLAB_PKGS) for the NAT tests ..." && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
	    $(NETLAB_PKGS) >/dev/null 2>&1 || \
	  { apt-get update -q >/dev/null 2>&1 && DEBIAN_FRONTEND=noninteractive \
	    apt-get install -y -q --no-install-recommends $(NETLAB_PKGS) >/dev/null 2>&1; } || \
	  echo "$(NETLAB_PKGS) not installed: the NAT tests will skip"; }

# Compiled modules are kept even where PYTHONDONTWRITEBYTECODE is set, in the venv: pytest
# rewrites its plugins and conftest.py before tests/conftest.py can say so (~0.7 s of CPU per
# pytest process); tests/conftest.py names the same folder for the nodes the tests start.
PYTEST := env -u PYTHONDONTWRITEBYTECODE PYTHONPYCACHEPREFIX=$(abspath $(VENV))/pycache \
  $(PY) -m pytest -q
# The suite's Hypothesis profile: `quick`, a fifth of each property's examples; `make fuzz` runs
# every property at its full count (`dev`): 112 tests, ~35 s of CPU at -n 4. See tests/conftest.py.
HYPOTHESIS_PROFILE ?= quick
# One collection compiles the modules the workers import (and rewrites the tests' asserts) into
# an empty cache (a fresh clone, a new venv) before they start: four workers compiling the same
# modules at once cost 21 s of CPU and 35 s of wall to start and collect, against 7 + 9 s of CPU
# and 7 + 5 s of wall this way (load 13). Once per venv; a later edit recompiles its module alone.
COMPILED := $(VENV)/pycache/.collected
$(COMPILED): $(STAMP)
	@mkdir -p $(dir $@) && $(PYTEST) --co -n 0 >/dev/null 2>&1 && touch $@ || true
test: $(STAMP) netlab browser $(COMPILED)
	HYPOTHESIS_PROFILE=$(HYPOTHESIS_PROFILE) $(PYTEST) $(TEST_ARGS)

fuzz: $(STAMP)
	HYPOTHESIS_PROFILE=dev $(PYTEST) -n 4 -m hypothesis

# schemathesis' long form against the client API: FUZZ_EXAMPLES fuzzed cases per operation and
# mode (the suite runs 1 beside the coverage phase's hostile cases; tests/node/test_api_schemathesis.py).
FUZZ_EXAMPLES ?= 25
fuzz-api: $(STAMP)
	HEARTHMESH_SCHEMATHESIS_EXAMPLES=$(FUZZ_EXAMPLES) $(PYTEST) -n 0 \
	  tests/node/test_api_schemathesis.py

# The browser tests (tests/web) drive Debian's Chromium through Playwright (a dev dependency);
# `playwright install` cannot download here, so apt installs it once; instant when present.
# Its headless shell runs them (~9 s less CPU); the full browser shows the notification test's
# push (tests/web/conftest.py). The emoji font draws the verification emoji (SPEC §15.7.10) in
# the tests' screenshots.
CHROMIUM ?= /usr/lib/chromium/chromium
HEADLESS_SHELL ?= /usr/lib/chromium/chromium-headless-shell
EMOJI_FONT ?= /usr/share/fonts/truetype/noto/NotoColorEmoji.ttf
browser:
	@test -x $(CHROMIUM) -a -x $(HEADLESS_SHELL) -a -f $(EMOJI_FONT) || { \
	  echo "installing chromium and fonts (apt) for the browser tests ..." && \
	  apt-get update -q >/dev/null && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
	    chromium chromium-headless-shell fonts-liberation fonts-noto-color-emoji >/dev/null; }

lint: $(STAMP)
	$(VENV)/bin/ruff check protocol storage node tools tests
	$(VENV)/bin/mypy --strict -p hearthmesh.protocol -p hearthmesh.storage -p hearthmesh.node -p hearthmesh.tools
	$(VENV)/bin/mypy --strict tests

clean:
	rm -rf $(VENV) build *.egg-info
