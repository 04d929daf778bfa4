#!/usr/bin/env bash
# The open-teacher pipeline end to end at CPU scale (about half an hour on 2 shared cores):
#   1. train a teacher: a small T5 that answers a bare SVAMP input in the PaLM completion format
#      (recipe cot_completion, gin/cpu/svamp_cot_teacher.gin, trained on the released PaLM
#      completions: no open LLM exists on this machine, so this T5 stands in for one);
#   2. serve it with dssb.serve (OpenAI-compatible, 127.0.0.1);
#   3. annotate SVAMP train (and test, to measure the teacher) with `python -m dssb.teacher
#      annotate` through the openai client: 3 samples per input at temperature 0.7, majority vote;
#   4. train the tiny student (distilling step-by-step, teacher labels and rationales: the
#      unlabeled setting) on those outputs, and the same student on PaLM's, with the trainer;
#   5. write results/open_teacher/ (python -m dssb.report results/open_teacher --collect WORK).
# WORK (default /tmp/dssb_open_teacher) keeps everything; rerunning resumes each step (trainer
# checkpoints, annotation cache).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
WORK=${WORK:-/tmp/dssb_open_teacher}
PORT=${PORT:-8321}
if [ -z "${DSSB_DATA_DIR:-}" ]; then export DSSB_DATA_DIR=$(cd ../shared/dss_data && pwd); fi
SOURCE_DATA=$DSSB_DATA_DIR
mkdir -p "$WORK"

# 1. The teacher.
$PY -m dssb.train --gin_file=gin/cpu/svamp_cot_teacher.gin --gin.MODEL_DIR="'$WORK/teacher'"

# 2. Serve it.
$PY -m dssb.serve --checkpoint "$WORK/teacher" --port "$PORT" --model_name teacher \
  --request_log "$WORK/requests.jsonl" > "$WORK/serve.out" 2> "$WORK/serve.err" &
SERVER=$!
trap 'kill $SERVER 2>/dev/null || true' EXIT
$PY - "$PORT" <<'PYEOF'
import sys, time, urllib.request
for _ in range(600):
  try:
    urllib.request.urlopen(f'http://127.0.0.1:{sys.argv[1]}/health', timeout=5)
    break
  except OSError:
    time.sleep(0.5)
PYEOF

# 3. Annotate (gin/teachers/dssb_serve.gin: prompt bare_v1, n=3, temperature 0.7).
export OPENAI_BASE_URL=http://127.0.0.1:$PORT/v1 DSSB_TEACHER_NAME=t5_teacher DSSB_TEACHER_MODEL=teacher
for SPLIT in train test; do
  $PY -m dssb.teacher annotate --teacher dssb_serve --dataset svamp --split $SPLIT \
    --out "$WORK/data"
done
kill $SERVER; trap - EXIT

# 4. Students: the same tiny T5, recipe and steps; only the teacher differs.
for TEACHER in t5_teacher palm; do
  DSSB_DATA_DIR="$WORK/data" $PY -m dssb.train --gin_file=gin/cpu/svamp_step_by_step.gin \
    --gin.MODEL_DIR="'$WORK/student_$TEACHER'" --gin.TEACHER="'$TEACHER'" \
    --gin.LABEL_SOURCE="'teacher'"
done

# 5. The report.
DSSB_DATA_DIR=$SOURCE_DATA $PY -m dssb.report results/open_teacher --collect "$WORK"
