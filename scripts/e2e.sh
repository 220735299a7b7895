#!/usr/bin/env bash
# The real-cluster tier (tests/e2e): the chart on a Kubernetes 1.20 started on loopback.
# Builds what is missing into ~/.cache/migrategate-e2e (MIGRATEGATE_E2E_CACHE): a fresh
# machine pays ~10 min once (Kubernetes from Debian's source package); cached, a few
# minutes. Never skips: if the cluster cannot be built or started, it fails and says why.
# Stops every process it started and unmounts what it mounted, also on failure/interrupt.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" != 0 ]; then
  echo "e2e: must run as root (dockerd, kubelet, mounts); it runs as $(id -un)" >&2
  exit 2
fi
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
if [ -z "${MIGRATEGATE_INSTALLED:-}" ]; then  # scripts/test.sh has just installed it
  rm -rf build  # a stale build/lib would put deleted modules into the wheel
  .venv/bin/python -m pip install -q --disable-pip-version-check '.[test]'
fi
# The main suite ignores tests/e2e (pyproject addopts); here it is the only target.
exec .venv/bin/python -m pytest tests/e2e -o addopts="-ra --strict-markers" "$@"
