PYTHON ?= python
# Everything below runs offline on one CPU machine.

.PHONY: install test test-fast bench data train-tiny reproduce-figures clean

install:
	$(PYTHON) -m pip install -e ".[dev]"

test:
	$(PYTHON) -m pytest -n 2 -q tests

test-fast:
	$(PYTHON) -m pytest -n 2 -q -m "not slow" tests

bench:
	$(PYTHON) benchmarks/bench_tracking.py

data:
	$(PYTHON) -m normgrowth_jax.data prepare --corpus all
	$(PYTHON) -m normgrowth_jax.data vocab

clean:
	rm -rf runs out .pytest_cache
