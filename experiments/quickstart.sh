#!/usr/bin/env bash
# The README's main job. Fresh machine -> the one-eighth claim of distilling step-by-step, tested
# on the CPU testbed (synthetic word problems with a simulated teacher, small T5s from scratch):
#   1. set up .venv (experiments/setup.sh);
#   2. standard finetuning vs distilling step-by-step at 12.5% and 100% of the labelled data,
#      3 seeds (gin/testbed/one_eighth_short.gin, 12 runs in one process, one compile cache;
#      --full: also 25% and 50%, gin/testbed/one_eighth.gin, 24 runs);
#   3. a real-data check: step-by-step on CQA with PaLM's released rationales, 30 steps through
#      the paper's data path (gin/testbed/cqa_check.gin);
#   4. the report of these runs (ROOT-report/, default runs/testbed-report/: the committed
#      results/ are never written), ending with the verdict table.
#   bash experiments/quickstart.sh                 # the main job
#   bash experiments/quickstart.sh --full          # the main job with all four fractions
#   bash experiments/quickstart.sh --mini_repro    # the real-data mini-reproduction instead
#   bash experiments/quickstart.sh --mini_repro --full   # its whole grid (72 runs)
# Measured from a fresh clone on a quiet 2-core machine (load < 1, 2026-12-05): set-up 156 s,
# then 350 s wall (579 CPU-s with the set-up), peak RSS 2.4 GB; on a shared machine 8 min 56 s (load 2-6) to
# 15 min 26 s (load 3-12). Most of it: 12 runs of 21-52 s.
# Extra arguments go to the sweep (e.g. --only FRACTION=0.125). Stopped, it continues where it
# was when run again (finished runs are skipped, the rest resume).
set -euo pipefail
cd "$(dirname "$0")/.."
MODE=testbed
if [ "${1:-}" = "--mini_repro" ]; then MODE=mini_repro; shift; fi
SWEEP=gin/cpu/mini_repro_short.gin
TESTBED=gin/testbed/one_eighth_short.gin
if [ "${1:-}" = "--full" ]; then
  SWEEP=gin/cpu/mini_repro.gin; TESTBED=gin/testbed/one_eighth.gin; shift
fi
SKIP_LAUNCH_ENV=1 SKIP_BROWSER=1 bash experiments/setup.sh
if [ -z "${DSSB_DATA_DIR:-}" ] && [ -d ../shared/dss_data/datasets ]; then
  export DSSB_DATA_DIR=$(cd ../shared/dss_data && pwd)
fi
if [ -z "${DSSB_DATA_DIR:-}" ]; then
  export DSSB_DATA_DIR=$HOME/.cache/dssb/dss_data
  [ -d "$DSSB_DATA_DIR/datasets" ] || .venv/bin/python -m dssb.data download --out "$DSSB_DATA_DIR"
fi
start=$(date +%s)
if [ "$MODE" = mini_repro ]; then
  ROOT=${ROOT:-runs/mini_repro}
  .venv/bin/python -m dssb.sweep --gin_file=$SWEEP --root "$ROOT" "$@"
  .venv/bin/python -m dssb.report "$ROOT-report" --collect "$ROOT"
  echo "report: $ROOT-report/README.md ($(( $(date +%s) - start )) s after set-up)"
  exit 0
fi
ROOT=${ROOT:-runs/testbed}
.venv/bin/python -m dssb.sweep --gin_file=$TESTBED --root "$ROOT" "$@"
.venv/bin/python -m dssb.train --gin_file=gin/testbed/cqa_check.gin \
  --gin.MODEL_DIR="'$ROOT-cqa_check'" 2>&1 | grep -E '^(task|test|step [0-9]+ validation)' || {
    echo "the CQA check failed: rerun it alone to see why:" >&2
    echo "  .venv/bin/python -m dssb.train --gin_file=gin/testbed/cqa_check.gin" \
      "--gin.MODEL_DIR=\"'$ROOT-cqa_check'\"" >&2
    exit 1; }
.venv/bin/python -m dssb.report "$ROOT-report" --collect "$ROOT"
echo
echo "The one-eighth claim on the testbed ($ROOT-report/README.md; verdicts computed;"
echo "the committed runs of every claim: results/testbed/README.md):"
grep -E '^\| (claim|---|one_eighth) ' "$ROOT-report/README.md"
echo "($(( $(date +%s) - start )) s after set-up)"
