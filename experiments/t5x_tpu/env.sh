# Environment the T5X launch scripts expect (source it after editing, or export these yourself).
# Nothing here installs anything: install T5X and this package first (see README.md).
export TPU_NAME="${TPU_NAME:-normgrowth-v3-8}"          # TPU VM (single host) or pod slice name
export ZONE="${ZONE:-europe-west4-a}"
export PROJECT="${PROJECT:-$(gcloud config get-value project 2>/dev/null)}"
export MODEL_DIR="${MODEL_DIR:-gs://YOUR_BUCKET/normgrowth/t5_1_1_base_c4}"   # checkpoints + TensorBoard
export TFDS_DATA_DIR="${TFDS_DATA_DIR:-gs://YOUR_BUCKET/tensorflow_datasets}"  # holds c4/en:3.1.0 (T5's task)
export NORMGROWTH_REPO="${NORMGROWTH_REPO:-$HOME/normgrowth_jax}"   # this repository on every worker
export T5X_REPO="${T5X_REPO:-$HOME/t5x}"                            # T5X's repository on every worker
export GIN_FILE="${GIN_FILE:-gin_configs/t5x/pretrain_t5_1_1_base_c4.gin}"
