#!/usr/bin/env bash
# Full-data baselines (issue: foundation, item 7): the ceilings active learning is measured against.
# Each run is resumable: rerunning this script continues unfinished runs from OUT/last.pt and
# re-evaluates finished ones. Results: runs/baselines/<name>/metrics.json -> docs/benchmarks.md.
set -euo pipefail
OUT=${OUT:-runs/baselines}
SEED=${SEED:-0}
run() { local name=$1; shift; activesynth train --out "$OUT/$name-s$SEED" --seed "$SEED" --quiet "$@"; }

# Brain MRI, FLAIR abnormality, all three channels, 128 px, patient-wise split 60/15/25.
run lgg-seg --dataset lgg --task seg --max-steps 3000 --eval-every 150 --patience 6
# The same at 64 px (the full-data reference experiments/lgg_dai.json once read; it now runs a matched `full` entry per seed).
run lgg64-seg --dataset lgg --task seg --size 64 --max-steps 3000 --eval-every 150 --patience 6
# Chest X-ray lung fields, 128 px, the public repository's split (174/22/51).
run jsrt-seg --dataset jsrt --task seg --split official --max-steps 1500 --eval-every 100 --patience 6
# PneumoniaMNIST, 28 px, the official MedMNIST split.
run pneumonia-cls --dataset pneumoniamnist --task cls --split official --max-steps 3000 \
    --batch-size 64 --eval-every 150 --patience 6
# JSRT nodule vs. no nodule (image-level), 256 px: nodules are a few pixels at 128 px.
run jsrt-cls --dataset jsrt --task cls --split official --size 256 --max-steps 2000 \
    --eval-every 100 --patience 8
# The same two at the scale of the chest X-ray active-learning grids (experiments/jsrt_lung.json
# at 64 px, experiments/jsrt_nodule.json at 128 px). Reference figures only: the grids no longer
# read them; each grid runs its own matched `full` entry per seed (issue 9).
run jsrt64-seg --dataset jsrt --task seg --split official --size 64 --max-steps 1500 \
    --eval-every 100 --patience 6
run jsrt128-cls --dataset jsrt --task cls --split official --size 128 --max-steps 2000 \
    --eval-every 100 --patience 8
