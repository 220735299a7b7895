#!/usr/bin/env bash
# Opt-in acceptance run of migrategate on a real Dify api tree (not part of scripts/test.sh):
#
#   PYTHON=/path/to/python3.12 bash scripts/dify-acceptance.sh /path/to/dify/api
#
# PYTHON must be a Python >= 3.12 that can `import models` in DIFY_API_DIR (Dify's own
# dependencies; docs/dify.md lists a minimal set) plus SQLAlchemy, Alembic, Flask-Migrate,
# psycopg2 and PyMySQL. migrategate runs from this checkout's src/. Starts throwaway
# PostgreSQL and MariaDB (tests/servers.py) and prints a table: empty -> head, no-op, verify,
# doctor, 8 concurrent runners, and `flask db upgrade` timings.
set -euo pipefail
if [ $# -ne 1 ]; then
  echo "usage: PYTHON=python3.12 bash scripts/dify-acceptance.sh DIFY_API_DIR" >&2
  exit 2
fi
here=$(cd "$(dirname "$0")/.." && pwd)
exec "${PYTHON:-python3}" "$here/scripts/dify_acceptance.py" "$1"
