#!/usr/bin/env bash
# The paper's T5.1.1-base C4 run on ONE TPU VM host (v3-8 / v4-8 / v5e-8), run ON the VM.
# Expects: T5X and normgrowth_jax installed in the active Python (see README.md), env.sh values.
# Usage: source env.sh && bash launch_single_host.sh [extra --gin.X=Y flags]
set -euo pipefail
: "${MODEL_DIR:?set MODEL_DIR (source env.sh)}" "${NORMGROWTH_REPO:?}" "${T5X_REPO:?}"
python -c "import t5x, normgrowth_jax.t5x" || {
  echo "T5X or normgrowth_jax is not importable here; install them first (README.md)." >&2; exit 1; }
export TFDS_DATA_DIR
python -m t5x.train \
  --gin_search_paths="${NORMGROWTH_REPO},${T5X_REPO}" \
  --gin_file="${GIN_FILE:-gin_configs/t5x/pretrain_t5_1_1_base_c4.gin}" \
  --gin.MODEL_DIR="\"${MODEL_DIR}\"" \
  --tfds_data_dir="${TFDS_DATA_DIR}" \
  "$@" 2>&1 | tee -a "train_$(date +%Y%m%d_%H%M%S).log"
