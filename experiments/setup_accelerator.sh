#!/usr/bin/env bash
# Sets up .venv on a TPU VM or a GPU machine: Python 3.11 (via uv), the pinned requirements and
# jax for the accelerator; no test requirements. Idempotent. Used by run_tpu.sh on every TPU
# worker and by the SkyPilot task files of `python -m dssb.sweep --emit-skypilot`.
#   bash experiments/setup_accelerator.sh tpu|cuda
set -euo pipefail
cd "$(dirname "$0")/.."
kind=${1:?usage: setup_accelerator.sh tpu|cuda}
if ! command -v uv >/dev/null; then
  python3 -m pip install -q --user uv==0.13.9
  export PATH="$HOME/.local/bin:$PATH"
fi
[ -x .venv/bin/python ] || uv venv -q --python 3.11 .venv
uv pip install -q --python .venv/bin/python -r requirements.txt
case "$kind" in
  tpu) uv pip install -q --python .venv/bin/python "jax[tpu]==0.10.2" \
         -f https://storage.googleapis.com/jax-releases/libtpu_releases.html ;;
  cuda) uv pip install -q --python .venv/bin/python "jax[cuda12]==0.10.2" ;;
  *) echo "setup_accelerator.sh: unknown kind $kind (tpu or cuda)" >&2; exit 2 ;;
esac
uv pip install -q --python .venv/bin/python --no-deps -e .
