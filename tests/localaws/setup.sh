#!/usr/bin/env bash
# Installs Python tools into git-ignored venvs at the repository root. Idempotent: does nothing
# when the pinned requirements are already installed.
#   setup.sh           the local AWS (moto server) into .venv
#   setup.sh --infra   SAM CLI, cfn-lint, checkov and cargo-lambda into .venv-infra
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
python="${PYTHON:-python3}"
if [ "${1:-}" = "--infra" ]; then
  venv="$root/.venv-infra"
  requirements="$root/infra/requirements.txt"
else
  venv="$root/.venv"
  requirements="$root/tests/localaws/requirements.txt"
fi
stamp="$venv/.requirements"

if [ -x "$venv/bin/python" ] && [ -f "$stamp" ] && cmp -s "$requirements" "$stamp"; then
  exit 0
fi
echo "setup: installing $(basename "$requirements") into $venv" >&2
[ -x "$venv/bin/python" ] || "$python" -m venv "$venv"
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$requirements"
cp "$requirements" "$stamp"
