#!/usr/bin/env bash
# Install the runtime alone (pip install .) into a fresh venv for each Python version given, deblur
# the example images with the default method (auto: blind estimation, else the teacher), and check
# TensorFlow was never imported.
set -euo pipefail
cd "$(dirname "$0")/.."
for version in "$@"; do
  py=$(PYENV_VERSION=$(pyenv versions --bare 2>/dev/null | grep -E "^${version}(\.|$)" | tail -1) pyenv which "python${version}" 2>/dev/null || command -v "python${version}" || true)
  if [ -z "$py" ]; then echo "python${version}: not installed here" >&2; exit 1; fi
  venv=".venv-py${version}"
  test -x "$venv/bin/python" || "$py" -m venv "$venv"
  "$venv/bin/pip" install -q --upgrade pip
  "$venv/bin/pip" install -q .
  out=$(mktemp -d)
  "$venv/bin/python" - "$out" <<'PY'
import sys
from edge_deblur.cli import main
code = main(["deblur", "examples/images", "-o", sys.argv[1], "--compare"])
assert code == 0, f"deblur exited {code}"
heavy = sorted(m for m in sys.modules if m.split(".")[0] in {"tensorflow", "keras", "scipy", "skimage", "PIL"})
assert not heavy, f"the runtime imported {heavy}"
print(f"python {sys.version.split()[0]}: runtime OK, no TensorFlow")
PY
  rm -rf "$out"
done
