#!/usr/bin/env bash
# The README's main job. Fresh machine -> the CPU mini-reproduction of distilling step-by-step:
# set up .venv, then small T5s trained FROM SCRATCH on CQA and SVAMP (PaLM's released
# rationales), standard finetuning vs step-by-step at 12.5% and 100% of the data, 3 seeds
# (gin/cpu/mini_repro_short.gin, 24 runs), then the report in results/mini_repro/.
#   bash experiments/quickstart.sh          # the short default
#   bash experiments/quickstart.sh --full   # the whole grid (gin/cpu/mini_repro.gin, 72 runs)
# Stopped, it continues where it was when run again (finished runs are skipped, the rest resume).
set -euo pipefail
cd "$(dirname "$0")/.."
SWEEP=gin/cpu/mini_repro_short.gin
if [ "${1:-}" = "--full" ]; then SWEEP=gin/cpu/mini_repro.gin; shift; fi
SKIP_LAUNCH_ENV=1 bash experiments/setup.sh
if [ -z "${DSSB_DATA_DIR:-}" ] && [ -d ../shared/dss_data/datasets ]; then
  export DSSB_DATA_DIR=$(cd ../shared/dss_data && pwd)
fi
if [ -z "${DSSB_DATA_DIR:-}" ]; then
  export DSSB_DATA_DIR=$HOME/.cache/dssb/dss_data
  [ -d "$DSSB_DATA_DIR/datasets" ] || .venv/bin/python -m dssb.data download --out "$DSSB_DATA_DIR"
fi
ROOT=${ROOT:-runs/mini_repro}
.venv/bin/python -m dssb.sweep --gin_file=$SWEEP --root "$ROOT" "$@"
.venv/bin/python -m dssb.report results/mini_repro --collect "$ROOT"
echo "report: results/mini_repro/README.md"
