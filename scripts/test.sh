#!/usr/bin/env bash
# Install everything the tests need and run the whole suite: lint, types, migrations check and
# pytest on PostgreSQL + Redis. Extra arguments go to pytest (e.g. scripts/test.sh -k ledger).
# --fast (first argument) leaves out the tests marked slow (workers, servers, browsers, races,
# fuzzing) and runs the rest on two xdist workers: the inner loop while editing (about 3.5 min on
# a loaded 2-core machine, 9 min serially). The default, and CI (.ci/run), is the whole suite.
set -euo pipefail
cd "$(dirname "$0")/.."

marks=()
if [ "${1:-}" = "--fast" ]; then
  shift
  marks=(-m "not slow" -n 2)
fi

scripts/bootstrap.sh test
# Debian's Chromium and emoji fonts for the browser tests (tests/dashboard).
if ! scripts/browser.sh; then
  [ -z "${CI:-}" ] || exit 1
  echo "==> Chromium could not be installed: the browser tests will be skipped" >&2
fi

export DJANGO_SETTINGS_MODULE=config.settings.test
# Under CI the test settings refuse to fall back to SQLite, so the services must come up.
export CI="${CI:-}"
in_ci() { case "${CI,,}" in 1 | true | yes | on) return 0 ;; *) return 1 ;; esac; }

if in_ci; then
  scripts/services.sh
elif ! scripts/services.sh; then
  echo "==> PostgreSQL/Redis unavailable: running on SQLite (tests marked postgres are skipped)" >&2
fi

pytest_args=()
# CI may run on a machine whose test database an earlier run left behind: start from scratch.
if in_ci; then pytest_args+=(--create-db); fi

if [ "$#" -eq 0 ]; then
  echo "==> ruff"
  .venv/bin/ruff check .
  .venv/bin/ruff format --check .
  echo "==> mypy"
  .venv/bin/mypy apps config
  echo "==> lint-imports (docs/architecture.md)"
  .venv/bin/lint-imports --no-cache
  echo "==> makemigrations --check"
  .venv/bin/python manage.py makemigrations --check --dry-run
fi
echo "==> pytest"
status=0
.venv/bin/python -m pytest "${pytest_args[@]}" "${marks[@]}" "$@" || status=$?
if [ "$status" -eq 5 ]; then
  echo "pytest collected no tests: that is a failure, not a pass." >&2
  exit 1
fi
exit "$status"
