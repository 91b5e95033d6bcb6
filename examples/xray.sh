#!/usr/bin/env bash
# Chest X-ray pneumonia (Kermany et al. 2018): fine-tune AlexNet, NORMAL vs PNEUMONIA.
#
# Dataset: "Labeled Optical Coherence Tomography (OCT) and Chest X-Ray Images for
#   Classification", Mendeley Data v2, https://data.mendeley.com/datasets/rscbjbr9sj/2
#   (also on Kaggle: paultimothymooney/chest-xray-pneumonia). Licence: CC BY 4.0, cite
#   D. S. Kermany et al., Cell 172(5):1122-1131, 2018. Not a diagnostic device.
#
# Layout after unzipping (a wrapper chest_xray/chest_xray/ is looked through):
#   chest_xray/
#     train/{NORMAL,PNEUMONIA}/*.jpeg   1,341 / 3,875   (grayscale, ~1-2k px, varied sizes)
#     val/{NORMAL,PNEUMONIA}/*.jpeg         8 / 8       (too small to choose a model on)
#     test/{NORMAL,PNEUMONIA}/*.jpeg      234 / 390
#   File names: NORMAL IM-0115-0001.jpeg, NORMAL2-IM-...; PNEUMONIA person1_bacteria_1.jpeg,
#   person1_virus_6.jpeg (several images per patient; the split is by image).
#
# What it does:
#   1. alexkit data check   counts, unreadable files, duplicates across splits
#   2. alexkit finetune     recipe `xray` on chest_xray/train: alexkit holds out a
#                           stratified 20% for validation (the official 8+8 val is
#                           ignored), grayscale input, balanced class weights, monitors
#                           AUC; stage 1 trains the head, stage 2 from conv4
#   3. alexkit evaluate     once, on chest_xray/test: accuracy, sensitivity/specificity,
#                           ROC, confusion matrix → RUN/eval/
#   4. alexkit predict      top-2 classes for one test film
#
# Usage:
#   examples/xray.sh ~/data/chest_xray            # real data, ImageNet weights, full schedule
#   examples/xray.sh --synthetic                  # generated stand-in, tiny settings (~1 min)
#   OUT=runs/xray2 ALEXKIT="python -m alexkit" examples/xray.sh --synthetic
# The `xray` recipe uses the `original` (2012) variant: --weights imagenet needs its
# ImageNet entry (`alexkit weights import bvlc_alexnet.npy --format bvlc-npy`), or set
# WEIGHTS to another store name or .keras file. `alexkit recipes show xray` prints it all.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/_lib.sh"
example_setup xray xray "$@"

run "${AK[@]}" data check "$DATA"
run "${AK[@]}" finetune --recipe "$RECIPE" --data "$DATA/train" --out "$OUT/run" --force \
    "${TRAIN_ARGS[@]}"
run "${AK[@]}" evaluate "$OUT/run" --data "$DATA/test" --out "$OUT/run/eval" "${EVAL_ARGS[@]}"
# `sed -n 1p` reads all its input: `head` could make sort die of SIGPIPE (pipefail).
film="$(find "$DATA/test/PNEUMONIA" -type f | sort | sed -n 1p)"
run "${AK[@]}" predict "$OUT/run" "$film" --top-k 2 "${EVAL_ARGS[@]}"
echo "done: run in $OUT/run, test metrics in $OUT/run/eval" >&2
