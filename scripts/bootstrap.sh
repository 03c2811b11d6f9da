#!/usr/bin/env bash
# Creates or refreshes the project virtual environment (.venv) on Python 3.13, the one
# Python of the project (Lambda runtime python3.13, worker image, LocalStack 2026.3).
# Idempotent: a warm run only compares a stamp of the requirement files.
set -euo pipefail
cd "$(dirname "$0")/.."

find_python() {
  for candidate in python3.13 "$HOME/.pyenv/versions/3.13.0/bin/python3.13" /root/.pyenv/versions/3.13.0/bin/python3.13; do
    if command -v "$candidate" >/dev/null 2>&1; then command -v "$candidate"; return 0; fi
  done
  for candidate in "$HOME"/.pyenv/versions/3.13*/bin/python3.13; do
    [ -x "$candidate" ] && { echo "$candidate"; return 0; }
  done
  echo "bootstrap: Python 3.13 not found (install it, e.g. with pyenv)" >&2
  return 1
}

venv=.venv
stamp="$venv/.requirements.sha256"
want=$(cat requirements/*.txt | sha256sum | cut -d' ' -f1)
if [ -x "$venv/bin/python" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$want" ]; then
  exit 0
fi
python=$(find_python)
echo "bootstrap: creating $venv with $python (about 90 s on a fresh machine)" >&2
[ -x "$venv/bin/python" ] || "$python" -m venv "$venv"
"$venv/bin/pip" install -q --disable-pip-version-check -r requirements/dev.txt -c requirements/lock.txt
echo "$want" > "$stamp"
