#!/usr/bin/env bash
# Creates or refreshes the project's virtual environments on Python 3.13, the one Python of the
# project (Lambda runtime python3.13, worker image, LocalStack 2026.3).
#   scripts/bootstrap.sh        .venv      (library, functions, worker dependencies, test tools)
#   scripts/bootstrap.sh sam    .venv-sam  (aws-sam-cli + samlocal: they pin their own dependencies)
# Idempotent: a warm run only compares a stamp of the requirement files.
set -euo pipefail
cd "$(dirname "$0")/.."

find_python() {
  # pyenv puts a python3.13 shim on PATH that fails unless 3.13 is selected: test each candidate.
  local candidate
  for candidate in python3.13 "$HOME"/.pyenv/versions/3.13*/bin/python3.13 /root/.pyenv/versions/3.13*/bin/python3.13; do
    if command -v "$candidate" >/dev/null 2>&1 && "$candidate" -c 'import sys; assert sys.version_info[:2] == (3, 13)' 2>/dev/null; then
      command -v "$candidate"; return 0
    fi
  done
  echo "bootstrap: Python 3.13 not found (install it, e.g. with pyenv)" >&2
  return 1
}

# make_venv DIR CONSTRAINTS REQUIREMENT_FILE...
make_venv() {
  local venv=$1 constraints=$2; shift 2
  local stamp="$venv/.requirements.sha256" want
  want=$(cat "$constraints" "$@" | sha256sum | cut -d' ' -f1)
  if [ -x "$venv/bin/python" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$want" ]; then
    return 0
  fi
  local python; python=$(find_python)
  echo "bootstrap: installing $venv with $python (a minute or two on a fresh machine)" >&2
  [ -x "$venv/bin/python" ] || "$python" -m venv "$venv"
  local args=()
  for req in "$@"; do args+=(-r "$req"); done
  "$venv/bin/pip" install -q --disable-pip-version-check "${args[@]}" -c "$constraints"
  echo "$want" > "$stamp"
}

case "${1:-main}" in
  main)
    make_venv .venv requirements/lock.txt requirements/layer.txt requirements/worker.txt requirements/dev.txt
    # The `siprems` command (client/siprems_client), installed editable: code changes apply at once.
    [ -x .venv/bin/siprems ] || .venv/bin/pip install -q --disable-pip-version-check --no-deps -e .
    ;;
  sam)  make_venv .venv-sam requirements/sam-lock.txt requirements/sam.txt ;;
  *) echo "usage: $0 [main|sam]" >&2; exit 2 ;;
esac
