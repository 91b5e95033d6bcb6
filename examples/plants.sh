#!/usr/bin/env bash
# Plant leaf diseases (PlantVillage): fine-tune AlexNet on <Crop>___<Disease> folders.
#
# Dataset: PlantVillage (Hughes & Salathe 2015), https://github.com/spMohanty/PlantVillage-Dataset
#   (raw/color), also on Kaggle (abdallahalidev/plantvillage-dataset, folder `color`).
#   Licence: released for open research; each mirror states its own terms. Cite
#   S. P. Mohanty, D. P. Hughes, M. Salathe, Frontiers in Plant Science 7:1419, 2016.
#
# Layout (use the `color` version; no split folders, so this workflow makes them):
#   color/
#     Apple___Apple_scab/<uuid>___FREC_Scab 3335.JPG     (38 folders, ~54,000 images,
#     Apple___healthy/...                                  256x256 RGB JPEGs; names have
#     Tomato___Late_blight/<uuid>___GHLB2 Leaf 8595.JPG    spaces and upper-case .JPG)
#     ...
#   Several photos show the same leaf, and the folders carry no leaf id: expect optimistic
#   scores from any image-level split.
#
# What it does:
#   1. alexkit data check        class counts, unreadable files, size statistics
#   2. examples/holdout.py       a stratified, seeded 10% test set: RUN/split/{train,test}.csv
#   3. alexkit finetune          recipe `plants` on train.csv (alexkit carves 20% of it for
#                                validation); strong flip/rotation/colour augmentation;
#                                stage 1 trains the head, stage 2 from conv3
#   4. alexkit evaluate          once, on test.csv: accuracy, top-5, per-class F1,
#                                confusion matrix → RUN/eval/
#   5. alexkit predict           top-2 classes for one held-out leaf
#
# Usage:
#   examples/plants.sh ~/data/plantvillage/color   # real data, ImageNet weights, full schedule
#   examples/plants.sh --synthetic                 # 3-class generated stand-in, tiny settings
# The `plants` recipe uses the `original` (2012) variant: --weights imagenet needs its
# ImageNet entry (`alexkit weights import bvlc_alexnet.npy --format bvlc-npy`), or set
# WEIGHTS to another store name or .keras file.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/_lib.sh"
example_setup plants plants "$@"

run "${AK[@]}" data check "$DATA"
run "${PY[@]}" "$EXAMPLES_DIR/holdout.py" "$DATA" --out "$OUT/split" --test-fraction 0.1
run "${AK[@]}" finetune --recipe "$RECIPE" --data "$OUT/split/train.csv" --out "$OUT/run" --force \
    "${TRAIN_ARGS[@]}"
run "${AK[@]}" evaluate "$OUT/run" --data "$OUT/split/test.csv" --out "$OUT/run/eval" \
    "${EVAL_ARGS[@]}"
leaf="$("${PY[@]}" -c 'import csv, sys; print(next(csv.DictReader(open(sys.argv[1])))["path"])' \
    "$OUT/split/test.csv")"
run "${AK[@]}" predict "$OUT/run" "$leaf" --top-k 2 "${EVAL_ARGS[@]}"
echo "done: run in $OUT/run, test metrics in $OUT/run/eval" >&2
