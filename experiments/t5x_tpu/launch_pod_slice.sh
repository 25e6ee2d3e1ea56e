#!/usr/bin/env bash
# The paper's run on a TPU pod slice (e.g. v3-32, v4-32): the same command on every worker,
# started from your workstation with gcloud. JAX discovers the slice's hosts by itself.
# Expects on EVERY worker: T5X and normgrowth_jax installed, both repositories at the paths in
# env.sh. MODEL_DIR must be a gs:// path all workers can write.
# Usage: source env.sh && bash launch_pod_slice.sh [extra --gin.X=Y flags]
# With 32+ chips, shard the model too: --gin.partitioning.PjitPartitioner.num_partitions=2.
set -euo pipefail
: "${TPU_NAME:?}" "${ZONE:?}" "${MODEL_DIR:?}" "${NORMGROWTH_REPO:?}" "${T5X_REPO:?}"
case "${MODEL_DIR}" in gs://*) ;; *) echo "MODEL_DIR must be gs:// on a pod slice" >&2; exit 1;; esac
extra=""
for a in "$@"; do extra+=" $(printf '%q' "$a")"; done
gcloud compute tpus tpu-vm ssh "${TPU_NAME}" --zone="${ZONE}" ${PROJECT:+--project="${PROJECT}"} \
  --worker=all --command="
    export TFDS_DATA_DIR='${TFDS_DATA_DIR}';
    cd \$HOME && python3 -m t5x.train \
      --gin_search_paths='${NORMGROWTH_REPO},${T5X_REPO}' \
      --gin_file='${GIN_FILE:-gin_configs/t5x/pretrain_t5_1_1_base_c4.gin}' \
      --gin.MODEL_DIR='\"${MODEL_DIR}\"' \
      --tfds_data_dir='${TFDS_DATA_DIR}' ${extra} \
      > \$HOME/normgrowth_train.log 2>&1"
