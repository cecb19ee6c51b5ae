#!/usr/bin/env bash
# Prints the path of a Python 3.10 interpreter, or explains what is missing and exits 1.
# Lookup order: $QP_PYTHON (if set, it is the only candidate), python3.10 on PATH,
# then the 3.10.* versions under pyenv's root.
set -u

is_py310() {
  [ -n "$1" ] && [ -x "$1" ] &&
    "$1" -c 'import sys; sys.exit(0 if sys.version_info[:2] == (3, 10) else 1)' >/dev/null 2>&1
}

fail() {
  cat >&2 <<MSG
ERROR: no Python 3.10 interpreter found ($1). TFX 1.16.0, the newest TFX on the package
registry, supports only Python 3.10, so the project's virtual environment (.venv) must be
built from a 3.10 interpreter. Looked at: ${2}. Fix: install Python 3.10 (for example
'pyenv install 3.10.13', or your distribution's python3.10 package) and re-run, or point
QP_PYTHON at an existing interpreter: 'make test QP_PYTHON=/path/to/python3.10'.
MSG
  exit 1
}

if [ -n "${QP_PYTHON:-}" ]; then
  is_py310 "$QP_PYTHON" && { echo "$QP_PYTHON"; exit 0; }
  fail "QP_PYTHON=$QP_PYTHON is missing, not executable, or not Python 3.10" "QP_PYTHON=$QP_PYTHON"
fi

looked="python3.10 on PATH"
candidate=$(command -v python3.10 2>/dev/null || true)
if is_py310 "$candidate"; then
  # A pyenv shim answers even for a version it cannot run; resolve to the real binary.
  "$candidate" -c 'import sys; print(sys.executable)'
  exit 0
fi

root=""
if command -v pyenv >/dev/null 2>&1; then root=$(pyenv root 2>/dev/null || true); fi
[ -n "$root" ] || root="${PYENV_ROOT:-$HOME/.pyenv}"
looked="$looked, $root/versions/3.10.*/bin/python3.10"
for candidate in $(ls -d "$root"/versions/3.10.* 2>/dev/null | sort -V -r); do
  if is_py310 "$candidate/bin/python3.10"; then echo "$candidate/bin/python3.10"; exit 0; fi
done

fail "none of the usual places has one" "$looked"
