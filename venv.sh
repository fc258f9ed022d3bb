# Shared shell helper, sourced by speedrun.sh and test.sh: a project-local virtual
# environment in .venv, created when missing, with a requirements file installed into it.
#
#   source venv.sh; ensure_venv requirements-test.txt; "$VENV_PY" -m pytest ...
#
# Environment: BASE_PYTHON (the interpreter that creates .venv; default python3).
# The install is skipped when the requirements files are unchanged since the last one
# (a hash in .venv/.installed-NAME), so a second run starts at once.

VENV_DIR=${VENV_DIR:-.venv}
VENV_PY=$VENV_DIR/bin/python

create_venv() {  # python -m venv, or, where ensurepip is missing, without pip and then bootstrapped
  local base=${BASE_PYTHON:-python3}
  echo "== creating $VENV_DIR with $($base --version 2>&1)"
  if $base -m venv "$VENV_DIR" 2>/dev/null; then return; fi
  rm -rf "$VENV_DIR"
  $base -m venv --without-pip "$VENV_DIR"
  if "$VENV_PY" -m ensurepip --upgrade --default-pip >/dev/null 2>&1; then return; fi
  if $base -m pip --version >/dev/null 2>&1; then  # pip >= 22.3 installs into another interpreter
    $base -m pip --python "$VENV_PY" install --quiet pip && return
  fi
  echo "error: cannot put pip into $VENV_DIR (no ensurepip, no pip in $base)." >&2
  echo "       On Debian/Ubuntu: apt-get install python3-venv, then run this again." >&2
  rm -rf "$VENV_DIR"
  return 1
}

ensure_venv() {  # ensure_venv REQUIREMENTS_FILE
  local req=$1
  if [ ! -x "$VENV_PY" ] || ! "$VENV_PY" -m pip --version >/dev/null 2>&1; then
    rm -rf "$VENV_DIR"
    create_venv || return 1
  fi
  # the file and the files it includes (-r), so an edit to requirements.txt reinstalls the tests' too
  local stamp="$VENV_DIR/.installed-$(basename "$req")"
  local want
  want=$(cat "$req" requirements.txt | cksum)
  if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    echo "== installing $req into $VENV_DIR"
    "$VENV_PY" -m pip install --quiet --disable-pip-version-check -r "$req" || return 1
    echo "$want" > "$stamp"
  fi
}
