#!/usr/bin/env bash
# Fresh machine -> a trained tiny T5 student: set up .venv, then distilling step-by-step on
# SVAMP with the PaLM rationales on the CPU (a few minutes). Extra arguments go to dssb.train.
set -euo pipefail
cd "$(dirname "$0")/.."
SKIP_LAUNCH_ENV=1 bash experiments/setup.sh  # no SkyPilot env: it only launches on clusters
if [ -z "${DSSB_DATA_DIR:-}" ] && [ -d ../shared/dss_data/datasets ]; then
  export DSSB_DATA_DIR=$(cd ../shared/dss_data && pwd)
fi
if [ -z "${DSSB_DATA_DIR:-}" ]; then
  export DSSB_DATA_DIR=$HOME/.cache/dssb/dss_data
  [ -d "$DSSB_DATA_DIR/datasets" ] || .venv/bin/python -m dssb.data download --out "$DSSB_DATA_DIR"
fi
MODEL_DIR=${MODEL_DIR:-/tmp/dssb_quickstart}
.venv/bin/python -m dssb.train --gin_file=gin/cpu/svamp_step_by_step.gin \
  --gin.MODEL_DIR="'$MODEL_DIR'" "$@"
echo "results: $MODEL_DIR/results.json"
