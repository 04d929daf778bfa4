#!/usr/bin/env bash
# One TPU worker's side of a pod job. run_tpu.sh starts it detached on every worker,
#   setsid nohup bash dssb/launch/worker.sh LOGS COPY_SECONDS COMMAND... >> ~/dssb-run/log 2>&1 &
# so the run outlives the ssh session that started it. It records its process group
# (~/dssb-run/pid: `run_tpu.sh stop` signals the whole group), copies the log to
# LOGS/worker-N.log every COPY_SECONDS while COMMAND runs and once at the end (LOGS '': no
# copies), and writes COMMAND's exit code to ~/dssb-run/exit_code (143: SIGTERM, state saved).
set -u
RUN=$HOME/dssb-run
LOGS=$1 COPY_SECONDS=$2
shift 2
echo $$ > "$RUN/pid"
# The worker's number: TPU_WORKER_ID where it is set, else the TPU VM's metadata server.
W=${TPU_WORKER_ID:-$(curl -sf -m 10 -H Metadata-Flavor:Google \
  http://metadata.google.internal/computeMetadata/v1/instance/attributes/agent-worker-number)}
copy() {
  [ -z "$LOGS" ] || gcloud storage cp "$RUN/log" "$LOGS/worker-$W.log" > /dev/null 2>&1 || true
}
stamp() { echo "$(date -u +%Y-%m-%dT%H:%M:%SZ) dssb worker $W: $*"; }
# SIGTERM reaches the whole group; this script waits for COMMAND to save and exit, and records
# its code. (A handler, not an ignore: COMMAND starts with SIGTERM's default action.)
trap : TERM
# The copier sleeps in bash itself (read -t), so stopping it leaves no child behind.
(trap - TERM; while ! read -rt "$COPY_SECONDS" <> <(:); do copy; done) &
copier=$!
stamp "start: $*"
"$@"
code=$?
kill "$copier" 2> /dev/null
stamp "exit code $code"
echo "$code" > "$RUN/exit_code"
copy
exit "$code"
