#!/usr/bin/env bash
# Creates .venv with the pinned library and test requirements (idempotent).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
stamp=.venv/.dssb-requirements
want=$(cat requirements.txt requirements-review.txt requirements-test.txt pyproject.toml \
  | sha256sum | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  .venv/bin/pip install -q --disable-pip-version-check -r requirements.txt \
    -r requirements-review.txt -r requirements-test.txt
  .venv/bin/pip install -q --disable-pip-version-check --no-deps --no-build-isolation -e .
  echo "$want" > "$stamp"
fi
# A real browser for the review page's test (tests/review_page_test.py drives it with Playwright):
# Debian's chromium, as root (CI, the dev machines); SKIP_BROWSER=1 or not root skips it and the
# browser test skips with that reason.
if [ -z "${SKIP_BROWSER:-}" ] && ! command -v chromium >/dev/null 2>&1 && [ "$(id -u)" = 0 ] \
    && command -v apt-get >/dev/null 2>&1; then
  (apt-get update -qq && apt-get install -y -qq chromium chromium-driver) >/dev/null 2>&1 \
    || echo "setup.sh: could not install chromium (the browser test will skip)" >&2
fi
# The launch environment (SkyPilot, to launch sweeps on clusters; its pins conflict with the
# training set, so it has its own venv). SKIP_LAUNCH_ENV=1 skips it.
launch_want=$(sha256sum requirements-launch.txt | cut -d' ' -f1)
if [ -z "${SKIP_LAUNCH_ENV:-}" ] && [ "$(cat .venv-launch/.stamp 2>/dev/null)" != "$launch_want" ]; then
  [ -x .venv-launch/bin/python ] || "$PYTHON" -m venv .venv-launch
  .venv-launch/bin/pip install -q --disable-pip-version-check -r requirements-launch.txt
  echo "$launch_want" > .venv-launch/.stamp
fi
