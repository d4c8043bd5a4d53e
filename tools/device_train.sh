#!/usr/bin/env bash
# Train the bundled default weights (the lite_people recipe) on a lent GPU machine, whose
# image has PyTorch but nothing of ours and no network. Prepare, here, once:
#   python tools/compact_data.py --out .gpu/data --budget-mb 52     # the photos, < 64 MiB
#   pip download --no-deps --only-binary=:all: --python-version 3.12 -d .whl \
#       kornia kornia_rs lion-pytorch tomli-w platformdirs            # what the image lacks
# then run it there (device tool: carry .gpu and .whl), resuming from .gpu/run if present:
#   bash tools/device_train.sh 8        # minutes of training; weights and log in $OUT
set -euo pipefail
minutes="${1:-8}"
out="${OUT:-out}"
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl
export PYTHONPATH=/tmp/site PYTHONUNBUFFERED=1
python3 -m pip install -q --no-index --no-deps --no-build-isolation -e .
run="${RUN_DIR:-.gpu/run}"
mkdir -p "$run" "$out"
data=.gpu/data
python3 -m vcam_harmonize.training.cli train --config lite_people --out "$run" --no-progress \
  --set "data.sets.0.root=\"$data/scenes\"" --set "data.sets.1.root=\"$data/people\"" \
  --set "data.sets.2.root=\"$data/faces\"" --set "data.sets.3.root=\"$data/portraits\"" \
  --set data.workers=14 --set train.batch_size=64 --set train.checkpoint_every=50 \
  --set train.val_every=1 --set "train.max_minutes=$minutes" 2>&1 | tee "$out/train.log"
cp "$run"/best.safetensors "$run"/log.csv "$run"/training.png "$out"/
cp "$run"/last.pt "$out"/ 2>/dev/null || true
