.PHONY: run test lint fmt
run:
	scripts/run.sh
test:
	scripts/test.sh
lint:
	.venv/bin/ruff check . && .venv/bin/ruff format --check . && .venv/bin/mypy apps config
fmt:
	.venv/bin/ruff check --fix . && .venv/bin/ruff format .
