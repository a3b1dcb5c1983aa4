#!/usr/bin/env bash
# Installs the local AWS (moto server) into the git-ignored .venv at the repository root.
# Idempotent: does nothing when the pinned requirements are already installed.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
venv="$root/.venv"
requirements="$root/tests/localaws/requirements.txt"
stamp="$venv/.requirements.localaws"
python="${PYTHON:-python3}"

if [ -x "$venv/bin/python" ] && [ -f "$stamp" ] && cmp -s "$requirements" "$stamp"; then
  exit 0
fi
echo "localaws: installing moto server into $venv" >&2
[ -x "$venv/bin/python" ] || "$python" -m venv "$venv"
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$requirements"
cp "$requirements" "$stamp"
