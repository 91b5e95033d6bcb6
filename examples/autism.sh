#!/usr/bin/env bash
# Autism facial images (Kaggle): fine-tune AlexNet, Autistic vs Non_Autistic.
#
# Dataset: "Autistic Children Facial Image Data Set" (G. Piosenka), Kaggle, e.g.
#   https://www.kaggle.com/datasets/cihan063/autism-image-data. Licence: check the Kaggle
#   page; the faces were collected from the internet and carry no per-image terms.
#   Research use only: a face classifier is not a diagnostic or screening tool, and this
#   set is known to leak shortcuts (background, lighting, source website).
#
# Layout:
#   <root>/
#     train/{Autistic,Non_Autistic}/*.jpg    2,540 images (1,270 per class)
#     valid/{Autistic,Non_Autistic}/*.jpg      100
#     test/{Autistic,Non_Autistic}/*.jpg       300
#   Pre-cropped, roughly aligned RGB faces (~224 px). The same child can appear in
#   several splits. AlexNet transfer has been reported at about 87.7% test accuracy.
#
# What it does:
#   1. alexkit data check   counts per split, unreadable files, duplicates across splits
#   2. alexkit finetune     recipe `autism`: train on train/, pick the model on valid/
#                           (monitors validation loss, early stopping, dropout 0.6,
#                           horizontal flips only); stage 1 head, stage 2 fc6 and up
#   3. alexkit evaluate     once, on test/: accuracy, sensitivity/specificity, ROC,
#                           confusion matrix → RUN/eval/
#   4. alexkit predict      top-2 classes for one test face
#
# Usage:
#   examples/autism.sh ~/data/autism          # real data, ImageNet weights, full schedule
#   examples/autism.sh --synthetic            # generated stand-in, tiny settings
# The `autism` recipe uses the `original` (2012) variant: --weights imagenet needs its
# ImageNet entry (`alexkit weights import bvlc_alexnet.npy --format bvlc-npy`), or set
# WEIGHTS to another store name or .keras file.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/_lib.sh"
example_setup autism autism "$@"

run "${AK[@]}" data check "$DATA"
run "${AK[@]}" finetune --recipe "$RECIPE" --data "$DATA/train" --val "$DATA/valid" \
    --out "$OUT/run" --force "${TRAIN_ARGS[@]}"
run "${AK[@]}" evaluate "$OUT/run" --data "$DATA/test" --out "$OUT/run/eval" "${EVAL_ARGS[@]}"
# `sed -n 1p` reads all its input: `head` could make sort die of SIGPIPE (pipefail).
face="$(find "$DATA/test/Autistic" -type f | sort | sed -n 1p)"
run "${AK[@]}" predict "$OUT/run" "$face" --top-k 2 "${EVAL_ARGS[@]}"
echo "done: run in $OUT/run, test metrics in $OUT/run/eval" >&2
