#!/bin/sh
# Helm 4 runs this with the rendered manifests on stdin and the --post-renderer-args as "$@";
# the manifests go to stdout. MIGRATEGATE_INJECT_COMMAND replaces the command (split on
# spaces), default: migrategate.
set -u
err=$(mktemp) || exit 1
${MIGRATEGATE_INJECT_COMMAND:-migrategate} inject "$@" 2>"$err"
rc=$?
cat "$err" >&2
# Helm 4.1 drops a post-renderer plugin's stderr ("plugin ... exited with error" and nothing
# else): put the one-line reason on helm's own stderr as well when that is a terminal or a
# pipe (appending to a regular file would race with helm's own writes at its offset).
if [ "$rc" -ne 0 ] && [ -s "$err" ] && [ -w "/proc/$PPID/fd/2" ] && [ ! -f "/proc/$PPID/fd/2" ]; then
  cat "$err" >>"/proc/$PPID/fd/2"
fi
rm -f "$err"
exit "$rc"
