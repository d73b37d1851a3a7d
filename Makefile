.PHONY: run test ci lint fmt
# The two README commands, and the CI entry point (the test command with CI=true).
run:
	scripts/run.sh
test:
	scripts/test.sh
ci:
	.ci/run
lint:
	.venv/bin/ruff check . && .venv/bin/ruff format --check . && .venv/bin/mypy apps config
fmt:
	.venv/bin/ruff check --fix . && .venv/bin/ruff format .
