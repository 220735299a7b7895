#!/bin/sh
# Helm 4 runs this with the rendered manifests on stdin and the --post-renderer-args as "$@";
# the manifests go to stdout.
#
# It runs the migrategate it ships: the source next to this file (migrategate -> the
# checkout's src/migrategate), with python3 (MIGRATEGATE_PYTHON to choose another; it needs
# PyYAML). Never a `migrategate` found on PATH, which any package could provide.
# MIGRATEGATE_INJECT_COMMAND replaces the whole command (split on spaces) for those who
# installed migrategate themselves.
set -u
here=$(cd "$(dirname "$0")" && pwd -P)
err=$(mktemp) || exit 1
if [ -n "${MIGRATEGATE_INJECT_COMMAND:-}" ]; then
  $MIGRATEGATE_INJECT_COMMAND inject "$@" 2>"$err"
  rc=$?
elif [ -f "$here/migrategate/__main__.py" ]; then
  PYTHONPATH="$here${PYTHONPATH:+:$PYTHONPATH}" PYTHONDONTWRITEBYTECODE=1 \
    "${MIGRATEGATE_PYTHON:-python3}" -m migrategate inject "$@" 2>"$err"
  rc=$?
else
  echo "migrategate-inject: the plugin's migrategate source is missing at $here/migrategate" \
       "(a checkout without symlinks? git config core.symlinks true); or set" \
       "MIGRATEGATE_INJECT_COMMAND" >"$err"
  rc=2
fi
cat "$err" >&2
# Helm 4.1 drops a post-renderer plugin's stderr ("plugin ... exited with error" and nothing
# else): put the one-line reason on helm's own stderr as well when that is a terminal or a
# pipe (appending to a regular file would race with helm's own writes at its offset).
if [ "$rc" -ne 0 ] && [ -s "$err" ] && [ -w "/proc/$PPID/fd/2" ] && [ ! -f "/proc/$PPID/fd/2" ]; then
  cat "$err" >>"/proc/$PPID/fd/2"
fi
rm -f "$err"
exit "$rc"
