#!/usr/bin/env bash
# Install everything the tests need and run the whole suite: lint, types, migrations check and
# pytest on PostgreSQL + Redis. Extra arguments go to pytest (e.g. scripts/test.sh -k ledger).
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/bootstrap.sh test
scripts/services.sh

export DJANGO_SETTINGS_MODULE=config.settings.test
# Under CI the test settings refuse to fall back to SQLite.
export CI="${CI:-}"

if [ "$#" -eq 0 ]; then
  echo "==> ruff"
  .venv/bin/ruff check .
  .venv/bin/ruff format --check .
  echo "==> mypy"
  .venv/bin/mypy apps config
  echo "==> makemigrations --check"
  .venv/bin/python manage.py makemigrations --check --dry-run
fi
echo "==> pytest"
exec .venv/bin/python -m pytest "$@"
