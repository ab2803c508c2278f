# Every target does its own set-up (scripts/setup) on a fresh machine.
.PHONY: setup demo test lint bench-speed benchmark calibrate

setup:
	scripts/setup

demo: setup
	HF_HUB_OFFLINE=1 .venv/bin/python examples/langchain_rag.py

# lint-imports reads the packages from the tree, as the tests do.
PACKAGES_PATH = .:integrations/langchain:integrations/llama-index:benchmarks

test: setup
	.venv/bin/ruff check .
	.venv/bin/mypy semgrad_guard integrations benchmarks/semgrad_bench
	PYTHONPATH=$(PACKAGES_PATH) .venv/bin/lint-imports
	HF_HUB_OFFLINE=1 .venv/bin/python -m pytest -q

lint: setup
	.venv/bin/ruff check .
	.venv/bin/mypy semgrad_guard integrations benchmarks/semgrad_bench
	PYTHONPATH=$(PACKAGES_PATH) .venv/bin/lint-imports

calibrate: setup
	HF_HUB_OFFLINE=1 .venv/bin/semgrad-guard calibrate

bench-speed: setup
	HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/speed.py

benchmark: setup
	benchmarks/run_all.sh
