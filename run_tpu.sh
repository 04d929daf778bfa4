#!/usr/bin/env bash
# Runs a dssb training (or a sweep) on every host of a Cloud TPU VM, one host or a pod slice,
# from your workstation (big_vision's habit: set up the environment, start `python -m`; the gin
# files hold the run), and keeps it going through spot preemptions.
#
#   bash run_tpu.sh launch [--dry-run] --tpu NAME --zone ZONE --accelerator_type v4-32 \
#     --data gs://BUCKET/dss_data [--local_data ../shared/dss_data] [--spot | --queued] \
#     [--sweep] [--watch] -- --gin_file=gin/paper/table1_2.gin \
#     --gin.MODEL_DIR="'gs://BUCKET/runs/cqa'" ...
#   bash run_tpu.sh status|logs|stop|delete --tpu NAME --zone ZONE [...]
#   bash run_tpu.sh watch  (the launch flags) -- (the run's flags)
#   bash run_tpu.sh VERB --help        (no VERB: launch, as before)
#
# launch: 1. create the TPU VM (or a queued resource), or reuse it; 2. copy this checkout (its
# tracked files) to every worker; 3. install the pinned requirements and jax[tpu] there;
# 4. sync --local_data to --data (GCS); 5. start the run on every worker DETACHED (setsid nohup:
# it outlives this shell and the ssh sessions), its output to ~/dssb-run/log on each worker,
# copied to MODEL_DIR/logs/worker-N.log as it goes, its process group in ~/dssb-run/pid.
# After `--`: the flags of `python -m dssb.train` (MODEL_DIR on GCS: every host writes there and
# a relaunched run resumes from it), or with --sweep those of `python -m dssb.sweep` (--root
# gs://...). --dry-run prints every command and runs none. --watch: then watch (below).
# status: the VM's state and the run's on each worker. logs: each worker's last lines, or follow
# one. stop: SIGTERM to the run on every worker (the trainer saves and exits 143), SIGKILL after
# a grace period. delete: delete the VM (or queued resource). watch: poll the VM; after a
# preemption (or a vanished VM, or a run that died) recreate, set up and relaunch the same
# command, which resumes from MODEL_DIR; bounded relaunches with backoff; every event logged
# with a UTC time; ends when MODEL_DIR/results.json exists (a sweep: when every worker exited 0).
set -euo pipefail
cd "$(dirname "$0")"

VERB=launch
case "${1:-}" in launch|status|logs|stop|delete|watch) VERB=$1; shift ;; esac
ORIGINAL=("$@")
DRY_RUN=0 TPU='' ZONE='' TYPE='' VERSION=tpu-ubuntu2204-base SPOT=0 QUEUED=0 DATA=''
LOCAL_DATA='' MODULE=dssb.train PROJECT='' WATCH=0 MODEL_DIR='' LOG_COPY_SECONDS=60
READY_TIMEOUT=7200 POLL_SECONDS=${DSSB_POD_POLL_SECONDS:-60} MAX_RELAUNCHES=10
BACKOFF_SECONDS=60 GRACE_SECONDS=300 WORKER='' FOLLOW=0 LINES=20 DELETE_WHEN_DONE=0

# The help of each verb: its usage lines and the options it reads.
help_text() {
  case "$1" in
    launch) awk 'NR > 1 && /^#/ {sub(/^# ?/, ""); print; next} NR > 1 {exit}' "$0"; cat <<'EOF'
Options: --project P; --version RUNTIME (tpu-ubuntu2204-base); --spot (spot VM) or --queued
(a spot queued resource: waits for capacity); --model_dir DIR (where logs are copied; default
the run's --gin.MODEL_DIR, or --root with --sweep); --log_copy_seconds S (60); --ready_timeout S
(7200: how long to wait for a created VM to be READY); --poll_seconds S (60); with --watch, the
options of `run_tpu.sh watch --help`.
EOF
      ;;
    status) cat <<'EOF'
bash run_tpu.sh status --tpu NAME --zone ZONE [--project P]
The VM's state, then one line per worker: running (pid), exited with code N (143: SIGTERM,
state saved), killed, stopped, not started, or no answer.
EOF
      ;;
    logs) cat <<'EOF'
bash run_tpu.sh logs --tpu NAME --zone ZONE [--project P] [--worker N] [--lines 20] [--follow]
The last --lines of each worker's log (~/dssb-run/log), prefixed with the worker; --follow
follows one worker's log (--worker, default 0) until Ctrl-C (the run goes on). The same logs are
copied to MODEL_DIR/logs/worker-N.log while the run goes.
EOF
      ;;
    stop) cat <<'EOF'
bash run_tpu.sh stop --tpu NAME --zone ZONE [--project P] [--grace_seconds 300]
SIGTERM to the run's process group on every worker (the trainer saves a checkpoint and exits
143), then SIGKILL to what still runs after --grace_seconds. Marks the run stopped, so a
watcher leaves it alone; `run_tpu.sh launch` (same flags) resumes it.
EOF
      ;;
    delete) cat <<'EOF'
bash run_tpu.sh delete --tpu NAME --zone ZONE [--project P] [--queued]
Deletes the TPU VM (with --queued: its queued resource, VM included). MODEL_DIR stays.
EOF
      ;;
    watch) cat <<'EOF'
bash run_tpu.sh watch (the launch flags) -- (the run's flags)   [or: launch ... --watch]
Launches the run if it is not running, then polls the VM every --poll_seconds (60). On
PREEMPTED (or TERMINATED), or a VM that vanished: delete it, recreate it with the same flags,
set it up and relaunch the same command (it resumes from MODEL_DIR). A run that died on a READY
VM is stopped on every worker and relaunched; exit code 2 (bad flags) or a `run_tpu.sh stop`
ends the watch. At most --max_relaunches (10) relaunches; a failed relaunch waits
--backoff_seconds (60), doubling, at most 1 h. Every event is logged with a UTC time. Ends (exit 0)
when MODEL_DIR/results.json exists (--sweep: every worker exited 0); --delete_when_done deletes
the VM then. One watcher per TPU (a lock in ~/.cache/dssb). Run it where it can stay up:
  nohup bash run_tpu.sh watch ... > watch-NAME.log 2>&1 &
EOF
      ;;
  esac
}
usage() { help_text "$VERB" >&2; exit 2; }
while [ $# -gt 0 ]; do
  case "$1" in
    --dry-run|--dry_run) DRY_RUN=1 ;;
    --tpu) TPU=$2; shift ;;
    --zone) ZONE=$2; shift ;;
    --project) PROJECT=$2; shift ;;
    --accelerator_type|--accelerator-type) TYPE=$2; shift ;;
    --version) VERSION=$2; shift ;;
    --spot) SPOT=1 ;;
    --queued) QUEUED=1 ;;
    --data) DATA=$2; shift ;;
    --local_data|--local-data) LOCAL_DATA=$2; shift ;;
    --sweep) MODULE=dssb.sweep ;;
    --watch) WATCH=1 ;;
    --model_dir) MODEL_DIR=$2; shift ;;
    --log_copy_seconds) LOG_COPY_SECONDS=$2; shift ;;
    --ready_timeout) READY_TIMEOUT=$2; shift ;;
    --poll_seconds) POLL_SECONDS=$2; shift ;;
    --max_relaunches) MAX_RELAUNCHES=$2; shift ;;
    --backoff_seconds) BACKOFF_SECONDS=$2; shift ;;
    --delete_when_done) DELETE_WHEN_DONE=1 ;;
    --grace_seconds) GRACE_SECONDS=$2; shift ;;
    --worker) WORKER=$2; shift ;;
    --follow|-f) FOLLOW=1 ;;
    --lines|-n) LINES=$2; shift ;;
    --) shift; break ;;
    -h|--help) help_text "$VERB"; exit 0 ;;
    *) echo "run_tpu.sh $VERB: unknown option $1 (the run's own flags go after --)" >&2; exit 2 ;;
  esac
  shift
done
# `watch --dry-run` prints what `launch --watch --dry-run` does (the watcher itself runs nothing).
if [ "$VERB" = watch ] && [ "$DRY_RUN" = 1 ]; then VERB=launch WATCH=1; fi
for required in TPU:--tpu ZONE:--zone; do
  variable=${required%%:*}
  if [ -z "${!variable}" ]; then echo "run_tpu.sh: ${required#*:} is required" >&2; usage; fi
done

# The verbs that ask about or act on a launched run: dssb/launch (standard library only).
POD=(python3 -m dssb.launch --tpu "$TPU" --zone "$ZONE")
[ -z "$PROJECT" ] || POD+=(--project "$PROJECT")
[ "$QUEUED" = 0 ] || POD+=(--queued)
case "$VERB" in
  status) exec "${POD[@]}" status ;;
  logs) exec "${POD[@]}" logs --lines "$LINES" ${WORKER:+--worker "$WORKER"} \
          $([ "$FOLLOW" = 0 ] || echo --follow) ;;
  stop) exec "${POD[@]}" stop --grace_seconds "$GRACE_SECONDS" ;;
  delete) exec "${POD[@]}" delete ;;
esac

for required in TYPE:--accelerator_type DATA:--data; do
  variable=${required%%:*}
  if [ -z "${!variable}" ]; then echo "run_tpu.sh: ${required#*:} is required" >&2; usage; fi
done
case "$DATA" in gs://*) ;; *) echo "run_tpu.sh: --data must be a gs:// folder" >&2; exit 2 ;; esac
[ $# -gt 0 ] || { echo "run_tpu.sh: give the run's flags after --" >&2; exit 2; }
[ "$SPOT" = 0 ] || [ "$QUEUED" = 0 ] || { echo "run_tpu.sh: --spot or --queued, not both" >&2
                                           exit 2; }
# Where the run writes (logs are copied there; the watcher looks for results.json there).
if [ -z "$MODEL_DIR" ]; then
  previous=''
  for flag in "$@"; do
    case "$MODULE:$flag" in
      dssb.train:--gin.MODEL_DIR=*) MODEL_DIR=${flag#--gin.MODEL_DIR=} ;;
      dssb.sweep:--root=*) MODEL_DIR=${flag#--root=} ;;
      dssb.sweep:*) [ "$previous" != --root ] || MODEL_DIR=$flag ;;
    esac
    previous=$flag
  done
  MODEL_DIR=${MODEL_DIR//\"/}; MODEL_DIR=${MODEL_DIR//\'/}
fi

if [ "$VERB" = watch ] || { [ "$WATCH" = 1 ] && [ "$DRY_RUN" = 0 ]; }; then
  [ -n "$MODEL_DIR" ] || { echo "run_tpu.sh: the watcher needs MODEL_DIR: give --model_dir (or \
--gin.MODEL_DIR=... / --root after --)" >&2; exit 2; }
  # The relaunch command: this one, as `launch`, without --watch.
  relaunch=(bash run_tpu.sh launch)
  for arg in "${ORIGINAL[@]}"; do [ "$arg" = --watch ] || relaunch+=("$arg"); done
  done_file=()
  [ "$MODULE" = dssb.sweep ] || done_file=(--done_file "${MODEL_DIR%/}/results.json")
  watch=("${POD[@]}" watch ${done_file[@]+"${done_file[@]}"} --poll_seconds "$POLL_SECONDS"
         --max_relaunches "$MAX_RELAUNCHES" --backoff_seconds "$BACKOFF_SECONDS")
  [ "$DELETE_WHEN_DONE" = 0 ] || watch+=(--delete_when_done)
  # `watch` launches first when nothing runs; `launch --watch` launches here, then watches.
  [ "$VERB" = watch ] && exec "${watch[@]}" --launch_first -- "${relaunch[@]}"
fi

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
vm_state() { "${TPU_VM[@]}" describe "$TPU" "${WHERE[@]}" --format='value(state)' 2>/dev/null; }

# 1. Create or reuse (a VM that is still being created is waited for; a preempted one is not
# reused: its workers are gone).
if [ "$DRY_RUN" = 1 ]; then
  run "${TPU_VM[@]}" describe "$TPU" "${WHERE[@]}" --format='value(state)'
  echo '# if it does not exist:'
  create=1
elif state=$(vm_state); then
  create=0
  case "$state" in
    PREEMPTED|TERMINATED|STOPPED|DELETING)
      echo "run_tpu.sh: TPU $TPU is $state: \`bash run_tpu.sh delete --tpu $TPU --zone $ZONE\`" \
        "first, or let \`run_tpu.sh watch\` recreate it" >&2
      exit 1 ;;
  esac
elif [ "$QUEUED" = 1 ] && queued=$(gcloud compute tpus queued-resources describe "$TPU" \
    "${WHERE[@]}" --format='value(state.state)' 2>/dev/null); then
  create=0  # queued already: wait for its VM
  case "$queued" in
    FAILED|SUSPENDED|SUSPENDING)
      echo "run_tpu.sh: queued resource $TPU is $queued: \`bash run_tpu.sh delete --tpu $TPU" \
        "--zone $ZONE --queued\` first, or let \`run_tpu.sh watch\` queue it again" >&2
      exit 1 ;;
  esac
else
  create=1
fi
if [ "$create" = 1 ]; then
  if [ "$QUEUED" = 1 ]; then
    run gcloud compute tpus queued-resources create "$TPU" --node-id="$TPU" "${WHERE[@]}" \
      --accelerator-type="$TYPE" --runtime-version="$VERSION" --spot
  else
    spot=(); [ "$SPOT" = 0 ] || spot=(--spot)
    run "${TPU_VM[@]}" create "$TPU" "${WHERE[@]}" --accelerator-type="$TYPE" \
      --version="$VERSION" ${spot[@]+"${spot[@]}"}
  fi
fi
if [ "$DRY_RUN" = 1 ]; then
  echo "# then, every --poll_seconds until READY (at most --ready_timeout): describe"
else
  waited=0
  until [ "$(vm_state || true)" = READY ]; do
    if [ "$waited" -ge "$READY_TIMEOUT" ]; then
      echo "run_tpu.sh: TPU $TPU is not READY after ${READY_TIMEOUT}s (--ready_timeout):" \
        "$(vm_state || echo absent)" >&2
      exit 1
    fi
    sleep "$POLL_SECONDS"
    waited=$((waited + ${POLL_SECONDS%.*} + 1))
  done
fi
# A reused VM: nothing is shipped or installed under a run that is still alive on a worker.
ALIVE="ps -eo pgid=,stat= | awk -v p=\"\$(cat ~/dssb-run/pid 2>/dev/null)\" '\$1 == p && \
\$2 !~ /^Z/ {f = 1} END {exit !f}'"
REFUSE="if $ALIVE; then echo 'a run is still running on this worker: bash run_tpu.sh stop \
first' >&2; exit 1; fi"
if [ "$create" = 0 ] || [ "$DRY_RUN" = 1 ]; then
  [ "$DRY_RUN" = 0 ] || echo '# if it exists:'
  run "${TPU_VM[@]}" ssh "$TPU" "${ON_ALL[@]}" --command="$REFUSE"
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
# 5. Start on all workers with --multihost, detached (dssb/launch/worker.sh records the exit
# code and copies the log); refused on a worker where a run is still alive.
command="env DSSB_DATA_DIR=$(quote "$DATA") .venv/bin/python -m $MODULE --multihost"
for flag in "$@"; do command+=" $(quote "$flag")"; done
logs=''; [ -z "$MODEL_DIR" ] || logs="${MODEL_DIR%/}/logs"
run "${TPU_VM[@]}" ssh "$TPU" "${ON_ALL[@]}" --command="mkdir -p ~/dssb-run && $REFUSE && \
cd dssb && rm -f ~/dssb-run/exit_code ~/dssb-run/stopped && { setsid nohup bash \
dssb/launch/worker.sh $(quote "$logs") $LOG_COPY_SECONDS $command >> ~/dssb-run/log 2>&1 \
< /dev/null & echo \$! > ~/dssb-run/pid; }"
pod="--tpu $TPU --zone $ZONE${PROJECT:+ --project $PROJECT}"
if [ "$DRY_RUN" = 0 ]; then
  echo "run_tpu.sh: started on every worker of $TPU (logs also in ${logs:-no MODEL_DIR})."
  echo "  follow: bash run_tpu.sh logs $pod --follow"
  echo "  status: bash run_tpu.sh status $pod;  stop: bash run_tpu.sh stop $pod"
fi
if [ "$WATCH" = 1 ]; then
  if [ "$DRY_RUN" = 1 ]; then
    echo "# then: bash run_tpu.sh watch (these flags): relaunch after preemptions"
  else
    exec "${watch[@]}" -- "${relaunch[@]}"
  fi
fi
