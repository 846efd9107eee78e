# Sourced by the shell scripts of tools/ (not run): sets PYTHON, the interpreter they run the
# Python tools with, and checks that it has mmfocal installed.
#   PYTHON set by the caller  -> that one;
#   a virtual environment is active -> its python;
#   the checkout has .venv/ (make env) -> .venv/bin/python;
#   otherwise python3.
_mmfocal_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [[ -z "${PYTHON:-}" ]]; then
  if [[ -n "${VIRTUAL_ENV:-}" ]]; then PYTHON="$VIRTUAL_ENV/bin/python"
  elif [[ -x "$_mmfocal_root/.venv/bin/python" ]]; then PYTHON="$_mmfocal_root/.venv/bin/python"
  else PYTHON=python3; fi
fi
# The tools import the installed package; from / so that no checkout in the working directory
# stands in for an installation.
if ! (cd / && "$PYTHON" -c "import importlib.util, sys; sys.exit(importlib.util.find_spec('mmfocal') is None)"); then
  echo "$PYTHON cannot import mmfocal: run \`make env\` (or \`pip install -e $_mmfocal_root\`), or set PYTHON" >&2
  exit 1
fi
unset _mmfocal_root
