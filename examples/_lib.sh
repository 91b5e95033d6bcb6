# Shared plumbing for the example workflows (sourced, not run). Each workflow script
# keeps its alexkit commands in plain view; this file only parses arguments, finds the
# tools and sets the real-data vs --synthetic settings.
#
# After `example_setup DOMAIN LAYOUT "$@"` these are set:
#   AK        the alexkit command as an array (env ALEXKIT, default `alexkit`)
#   PY        a Python that can import alexkit (env PYTHON; default: the python next
#             to the alexkit executable, else python3)
#   DATA      the dataset root (the PATH argument, or a generated stand-in)
#   OUT       the output folder (--out DIR, env OUT, default runs/DOMAIN)
#   SYNTHETIC 1 with --synthetic, else 0
#   RECIPE    what to give `finetune --recipe`: the built-in recipe DOMAIN, or with
#             --variant NAME that recipe for another AlexNet variant, written by
#             recipe_variant.py to OUT/recipe-NAME.toml (e.g. --variant tiny: a
#             0.2M-parameter smoke-test network, a workflow in seconds)
#   TRAIN_ARGS  extra finetune flags: real data → "--weights $WEIGHTS" (env WEIGHTS,
#             default imagenet) and the recipe's schedule; --synthetic → random init,
#             one epoch of one step per stage, batch 4 (proves the commands, learns little)
#   EVAL_ARGS extra evaluate/predict flags (batch 4 with --synthetic, else 32)

EXAMPLES_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

example_usage() {
    cat >&2 <<EOF
usage: $(basename "$0") PATH/TO/DATASET [--out DIR] [--variant NAME]   (real data)
       $(basename "$0") --synthetic [--out DIR] [--variant NAME]   (generated ${2} stand-in)
--variant NAME: the ${1} recipe with another AlexNet variant (original, torchvision, tiny:
       a 0.2M-parameter smoke-test network); default: the recipe's own
env:   ALEXKIT (alexkit command), PYTHON, OUT (default runs/${1}), WEIGHTS (default imagenet)
EOF
    exit 2
}

# Print a command (so the log shows the exact invocation), then run it.
run() {
    printf '+ %s\n' "$*" >&2
    "$@"
}

example_setup() {
    local domain=$1 layout=$2
    shift 2
    SYNTHETIC=0
    DATA=""
    local variant=""
    OUT="${OUT:-runs/$domain}"
    while [[ $# -gt 0 ]]; do
        case $1 in
            --synthetic) SYNTHETIC=1 ;;
            --out) [[ $# -ge 2 ]] || example_usage "$domain" "$layout"; OUT=$2; shift ;;
            --variant) [[ $# -ge 2 ]] || example_usage "$domain" "$layout"; variant=$2; shift ;;
            -h|--help) example_usage "$domain" "$layout" ;;
            -*) echo "unknown option: $1" >&2; example_usage "$domain" "$layout" ;;
            *) DATA=$1 ;;
        esac
        shift
    done
    if [[ $SYNTHETIC == 0 && -z $DATA ]] || [[ $SYNTHETIC == 1 && -n $DATA ]]; then
        example_usage "$domain" "$layout"
    fi

    read -r -a AK <<< "${ALEXKIT:-alexkit}"
    if [[ -n ${PYTHON:-} ]]; then
        read -r -a PY <<< "$PYTHON"
    else
        local exe
        exe="$(command -v "${AK[0]}" || true)"
        if [[ -n $exe && -x "$(dirname "$exe")/python" ]]; then
            PY=("$(dirname "$exe")/python")  # the venv alexkit was installed into
        else
            PY=(python3)
        fi
    fi

    RECIPE=$domain
    local toml=""
    if [[ -n $variant ]]; then  # resolved (and a bad name refused) before anything is written
        toml="$("${PY[@]}" "$EXAMPLES_DIR/recipe_variant.py" "$domain" "$variant")" || exit 2
    fi

    if [[ $SYNTHETIC == 1 ]]; then
        # A fresh stand-in every run: small, seeded, with the real layout.
        mkdir -p "$OUT"
        rm -rf "$OUT/standin"
        DATA="$("${PY[@]}" "$EXAMPLES_DIR/make_standin.py" "$layout" "$OUT/standin" \
            --per-class "${STANDIN_PER_CLASS:-6}")"
        TRAIN_ARGS=(--weights none --epochs 1 --steps-per-epoch 1 --batch-size 4 --quiet)
        EVAL_ARGS=(--batch-size 4)
    else
        [[ -d $DATA ]] || { echo "$DATA: no such folder" >&2; exit 2; }
        TRAIN_ARGS=(--weights "${WEIGHTS:-imagenet}")
        # Never empty: bash 3.2 (macOS) with set -u rejects "${EMPTY[@]}".
        EVAL_ARGS=(--batch-size 32)
    fi
    if [[ -n $variant ]]; then
        mkdir -p "$OUT"
        RECIPE="$OUT/recipe-$variant.toml"
        printf '%s\n' "$toml" > "$RECIPE"
    fi
}
