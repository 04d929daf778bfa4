#!/usr/bin/env bash
# Runs a dssb training (or a sweep) on every host of a Cloud TPU VM, one host or a pod slice,
# from your workstation (big_vision's habit: set up the environment, start `python -m`; the gin
# files hold the run). Steps, each a gcloud command:
#   1. create the TPU VM, or reuse it if it exists;
#   2. copy this checkout (its tracked files) to every worker;
#   3. install the pinned requirements and jax[tpu] on every worker (--worker=all);
#   4. put the data where every worker reads it: --local_data DIR is synced to --data (GCS);
#   5. launch on all workers at once with --multihost (JAX finds its peers).
#
#   bash run_tpu.sh [--dry-run] --tpu NAME --zone ZONE --accelerator_type v4-32 \
#     --data gs://BUCKET/dss_data [--local_data ../shared/dss_data] [--spot] [--sweep] -- \
#     --gin_file=gin/paper/table1_2.gin --gin.MODEL_DIR="'gs://BUCKET/runs/cqa'" ...
#
# After `--`: the flags of `python -m dssb.train` (MODEL_DIR on GCS: every host writes there,
# and a preempted slice resumes from it), or with --sweep those of `python -m dssb.sweep`
# (--root gs://...). --dry-run prints every command and runs none of them.
set -euo pipefail
cd "$(dirname "$0")"

DRY_RUN=0 TPU='' ZONE='' TYPE='' VERSION=tpu-ubuntu2204-base SPOT=0 DATA='' LOCAL_DATA=''
MODULE=dssb.train PROJECT=''
usage() { sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//'; exit 2; }
while [ $# -gt 0 ]; do
  case "$1" in
    --dry-run|--dry_run) DRY_RUN=1 ;;
    --tpu) TPU=$2; shift ;;
    --zone) ZONE=$2; shift ;;
    --project) PROJECT=$2; shift ;;
    --accelerator_type|--accelerator-type) TYPE=$2; shift ;;
    --version) VERSION=$2; shift ;;
    --spot) SPOT=1 ;;
    --data) DATA=$2; shift ;;
    --local_data|--local-data) LOCAL_DATA=$2; shift ;;
    --sweep) MODULE=dssb.sweep ;;
    --) shift; break ;;
    -h|--help) usage ;;
    *) echo "run_tpu.sh: unknown option $1 (the run's own flags go after --)" >&2; exit 2 ;;
  esac
  shift
done
for required in TPU:--tpu ZONE:--zone TYPE:--accelerator_type DATA:--data; do
  variable=${required%%:*}
  if [ -z "${!variable}" ]; then
    echo "run_tpu.sh: ${required#*:} is required" >&2; usage
  fi
done
case "$DATA" in gs://*) ;; *) echo "run_tpu.sh: --data must be a gs:// folder" >&2; exit 2 ;; esac
[ $# -gt 0 ] || { echo "run_tpu.sh: give the run's flags after --" >&2; exit 2; }

# One word, quoted for a POSIX shell only where it needs it (as Python's shlex.quote).
quote() {
  case "$1" in
    '' | *[!A-Za-z0-9_./:=,@%+-]*) printf "'%s'" "${1//\'/\'\"\'\"\'}" ;;
    *) printf '%s' "$1" ;;
  esac
}
# Prints a command (each word quoted) under --dry-run, runs it otherwise.
run() {
  if [ "$DRY_RUN" = 0 ]; then "$@"; return; fi
  local line='' word
  for word in "$@"; do line+="${line:+ }$(quote "$word")"; done
  echo "$line"
}
TPU_VM=(gcloud compute tpus tpu-vm)
WHERE=(--zone="$ZONE")
[ -z "$PROJECT" ] || WHERE+=(--project="$PROJECT")
ON_ALL=(--worker=all "${WHERE[@]}")
PACKAGE=${TMPDIR:-/tmp}/dssb-$TPU.tar.gz

# 1. Create or reuse.
if [ "$DRY_RUN" = 1 ]; then
  run "${TPU_VM[@]}" describe "$TPU" "${WHERE[@]}"
  echo '# if it does not exist:'
  create=1
elif "${TPU_VM[@]}" describe "$TPU" "${WHERE[@]}" >/dev/null 2>&1; then
  create=0
else
  create=1
fi
if [ "$create" = 1 ]; then
  spot=(); [ "$SPOT" = 0 ] || spot=(--spot)
  run "${TPU_VM[@]}" create "$TPU" "${WHERE[@]}" --accelerator-type="$TYPE" \
    --version="$VERSION" "${spot[@]}"
fi
# 2. This checkout's tracked files, on every worker.
run bash -c "git ls-files -z | tar czf $PACKAGE --null -T -"
run "${TPU_VM[@]}" scp "$PACKAGE" "$TPU:dssb.tar.gz" "${ON_ALL[@]}"
run "${TPU_VM[@]}" ssh "$TPU" "${ON_ALL[@]}" \
  --command="mkdir -p dssb && tar xzf dssb.tar.gz -C dssb"
# 3. Pinned requirements and jax[tpu] on every worker.
run "${TPU_VM[@]}" ssh "$TPU" "${ON_ALL[@]}" \
  --command="cd dssb && bash experiments/setup_accelerator.sh tpu"
# 4. The data on GCS, read by every worker.
if [ -n "$LOCAL_DATA" ]; then
  run gcloud storage rsync --recursive "$LOCAL_DATA" "$DATA"
fi
# 5. Launch on all workers with --multihost.
launch="cd dssb && DSSB_DATA_DIR=$(quote "$DATA") .venv/bin/python -m $MODULE --multihost"
for flag in "$@"; do launch+=" $(quote "$flag")"; done
run "${TPU_VM[@]}" ssh "$TPU" "${ON_ALL[@]}" --command="$launch"
