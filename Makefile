.PHONY: test lint bench bench-quick sample

# Installs everything the tests need (apt packages, pip packages, dockerd, base images), then runs them.
test:
	bash tests/setup.sh
	python3 -m ruff check builder cache grammar tests bench
	python3 -m mypy --ignore-missing-imports --exclude "^bench/out/" builder cache bench
	python3 -m pytest

lint:
	python3 -m ruff check builder cache grammar tests bench
	python3 -m mypy --ignore-missing-imports --exclude "^bench/out/" builder cache bench

bench:
	python3 -m bench

bench-quick:
	python3 -m bench --quick
