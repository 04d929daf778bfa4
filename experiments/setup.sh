#!/usr/bin/env bash
# Creates .venv with the pinned library and test requirements (idempotent).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
stamp=.venv/.dssb-requirements
want=$(cat requirements.txt requirements-test.txt pyproject.toml | sha256sum | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  .venv/bin/pip install -q --disable-pip-version-check -r requirements.txt -r requirements-test.txt
  .venv/bin/pip install -q --disable-pip-version-check --no-deps --no-build-isolation -e .
  echo "$want" > "$stamp"
fi
# The launch environment (SkyPilot, to launch sweeps on clusters; its pins conflict with the
# training set, so it has its own venv). SKIP_LAUNCH_ENV=1 skips it.
launch_want=$(sha256sum requirements-launch.txt | cut -d' ' -f1)
if [ -z "${SKIP_LAUNCH_ENV:-}" ] && [ "$(cat .venv-launch/.stamp 2>/dev/null)" != "$launch_want" ]; then
  [ -x .venv-launch/bin/python ] || "$PYTHON" -m venv .venv-launch
  .venv-launch/bin/pip install -q --disable-pip-version-check -r requirements-launch.txt
  echo "$launch_want" > .venv-launch/.stamp
fi
