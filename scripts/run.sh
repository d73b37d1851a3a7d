#!/usr/bin/env bash
# Install and run the whole product on embedded defaults: SQLite, an embedded Celery broker (a
# SQLite file), the sandbox engine. scripts/devrun.py starts the web server, the two workers,
# beat and the Discord gateway in the foreground; Ctrl-C stops them all.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/bootstrap.sh run

export DJANGO_SETTINGS_MODULE="${DJANGO_SETTINGS_MODULE:-config.settings.local}"
# Lets webhooks reach receivers on this machine while developing (SPEC §7).
export WEBHOOKS_ALLOW_PRIVATE_ADDRESSES="${WEBHOOKS_ALLOW_PRIVATE_ADDRESSES:-true}"
export PORT="${PORT:-8000}"
export PUBLIC_BASE_URL="${PUBLIC_BASE_URL:-http://127.0.0.1:${PORT}}"

.venv/bin/python manage.py migrate --noinput -v 1
.venv/bin/python manage.py seed_demo
# The embedded broker's tables, made once before the processes that share its file start.
.venv/bin/python manage.py embedded_broker_prepare
exec .venv/bin/python scripts/devrun.py
