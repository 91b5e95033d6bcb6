#!/usr/bin/env bash
# Satellite land use (EuroSAT RGB): fine-tune AlexNet (torchvision variant) on 64x64 tiles.
#
# Dataset: EuroSAT (Helber et al. 2019), https://github.com/phelber/EuroSAT — the RGB
#   zip (EuroSAT.zip, ~90 MB; also on Zenodo as EuroSAT_RGB.zip). Licence: MIT. Cite
#   P. Helber, B. Bischke, A. Dengel, D. Borth, IEEE JSTARS 12(7), 2019.
#
# Layout (no split folders, so this workflow makes them):
#   2750/                        (EuroSAT.zip; the Zenodo zip names it EuroSAT_RGB/)
#     AnnualCrop/AnnualCrop_1.jpg ... AnnualCrop_3000.jpg
#     Forest/Forest_1.jpg ...
#     HerbaceousVegetation/ Highway/ Industrial/ Pasture/ PermanentCrop/
#     Residential/ River/ SeaLake/
#   10 classes, 27,000 Sentinel-2 tiles of 64x64 RGB (upscaled to the model's 224 input).
#   Aerial disaster sets such as AIDER (<root>/<class>/*.jpg) run the same way.
#
# What it does:
#   1. alexkit data check        class counts, unreadable files, sizes (64x64)
#   2. examples/holdout.py       a stratified, seeded 10% test set: RUN/split/{train,test}.csv
#   3. alexkit finetune          recipe `satellite` on train.csv (20% of it held out for
#                                validation); flips and quarter turns (top-down views);
#                                stage 1 head, stage 2 from conv3
#   4. alexkit evaluate          once, on test.csv: accuracy, top-5, per-class F1,
#                                confusion matrix → RUN/eval/
#   5. alexkit predict           top-2 classes for one held-out tile
#
# Usage:
#   examples/satellite.sh ~/data/2750         # real data, ImageNet weights, full schedule
#   examples/satellite.sh --synthetic         # 4-class generated stand-in, tiny settings
# The `satellite` recipe uses the `torchvision` variant, so --weights imagenet is one
# `alexkit weights download torchvision` away (or set WEIGHTS to a store name / .keras file).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/_lib.sh"
example_setup satellite eurosat "$@"

run "${AK[@]}" data check "$DATA"
run "${PY[@]}" "$EXAMPLES_DIR/holdout.py" "$DATA" --out "$OUT/split" --test-fraction 0.1
run "${AK[@]}" finetune --recipe "$RECIPE" --data "$OUT/split/train.csv" --out "$OUT/run" \
    --force "${TRAIN_ARGS[@]}"
run "${AK[@]}" evaluate "$OUT/run" --data "$OUT/split/test.csv" --out "$OUT/run/eval" \
    "${EVAL_ARGS[@]}"
tile="$("${PY[@]}" -c 'import csv, sys; print(next(csv.DictReader(open(sys.argv[1])))["path"])' \
    "$OUT/split/test.csv")"
run "${AK[@]}" predict "$OUT/run" "$tile" --top-k 2 "${EVAL_ARGS[@]}"
echo "done: run in $OUT/run, test metrics in $OUT/run/eval" >&2
