#!/usr/bin/env bash
# Runs one dssb training on every host of a Cloud TPU pod slice (big_vision's habit: this only
# sets up the environment and starts `python -m dssb.train`; the gin files hold the run).
#
#   gcloud compute tpus tpu-vm ssh $TPU --zone=$ZONE --worker=all \
#     --command="cd dssb && bash run_tpu.sh --gin_file=gin/models/t5_1_1_base.gin \
#       --gin_file=gin/runs/train.gin --gin.DATASET=\"'cqa'\" --gin.RECIPE=\"'step_by_step'\" \
#       --gin.MODEL_DIR=\"'gs://BUCKET/cqa_sbs'\" --gin.VOCAB_PATH=\"'gs://t5-data/vocabs/cc_all.32000.100extra/sentencepiece.model'\""
#
# Needs DSSB_DATA_DIR on every host (a local copy or gs:// path of the datasets/ tree).
set -euo pipefail
cd "$(dirname "$0")"
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
  .venv/bin/pip install -q -r requirements.txt
  .venv/bin/pip install -q "jax[tpu]==0.10.2" -f https://storage.googleapis.com/jax-releases/libtpu_releases.html
fi
exec .venv/bin/python -m dssb.train --multihost "$@"
