#!/usr/bin/env bash
# Create .venv and install mjgate into it. Usage: scripts/bootstrap.sh [run|test]
# Re-installs only when pyproject.toml changed since the last install.
set -euo pipefail
cd "$(dirname "$0")/.."

PROFILE="${1:-run}"
PYTHON="${PYTHON:-python3}"

if ! "$PYTHON" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)'; then
  echo "mjgate needs Python 3.11 or newer; $PYTHON is $("$PYTHON" --version 2>&1)." >&2
  exit 1
fi

if [ ! -x .venv/bin/python ]; then
  echo "==> creating .venv"
  "$PYTHON" -m venv .venv
fi

extras=""
[ "$PROFILE" = "test" ] && extras="[test]"
stamp=".venv/.installed-${PROFILE}"
digest="$(sha256sum pyproject.toml | cut -d' ' -f1)"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$digest" ]; then
  echo "==> installing mjgate${extras} into .venv"
  .venv/bin/python -m pip install --quiet --upgrade pip
  .venv/bin/python -m pip install --quiet -e ".${extras}"
  echo "$digest" > "$stamp"
fi

# The Celery processes run under python -OO (config/celery_cli.py), whose .opt-2.pyc caches pip
# does not write. Without them, wherever Python may not write caches (PYTHONDONTWRITEBYTECODE, a
# read-only install), every such process compiles each module it imports from source when it
# starts: seconds of CPU, and heap that each prefork pool process inherits (issue 15, P6). So the
# dependencies are compiled for -OO once per install, and our own code at both levels each time
# (compileall skips what has not changed). docker/Dockerfile does the same in the image.
oo_stamp=".venv/.compiled-oo-${PROFILE}"
if [ ! -f "$oo_stamp" ] || [ "$(cat "$oo_stamp")" != "$digest" ]; then
  echo "==> compiling the dependencies for python -OO"
  site="$(.venv/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
  # A few files in the dependencies (templates, test data) are not Python 3: skipped, as pip does.
  .venv/bin/python -m compileall -q -j 0 -o 2 "$site" >/dev/null 2>&1 || true
  echo "$digest" > "$oo_stamp"
fi
.venv/bin/python -m compileall -q -j 0 -o 0 -o 2 apps config >/dev/null || true
