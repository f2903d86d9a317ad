#!/usr/bin/env bash
# Does a longer pre-training make the small models draw what the caption names? For a CUDA
# machine with emu and its backends installed: pre-trains the pixel and masked backends'
# `small` preset (32 px, the demo's size) on a pool with STEPS steps at batch BATCH, both side
# by side on the one GPU, then measures each with bench/generator_faithfulness.py at guidance 5
# and 10 (JSON beside the logs).
#
#     bash bench/gpu_faithfulness.sh POOL [OUT] [STEPS] [BATCH] [DEVICE] [TOKENIZER_STEPS]
# POOL: a pool folder (`emu data synth`, e.g. runs/demo/pool); OUT: default gpu-faithfulness;
# STEPS: pixel denoiser and masked transformer steps (default 4000); BATCH: default 128;
# DEVICE: cuda (default), or cpu to try the script; TOKENIZER_STEPS: the masked tokenizer's
# steps (default 1500, its preset's).
set -uo pipefail
pool=$1
out=${2:-gpu-faithfulness}
steps=${3:-4000}
batch=${4:-128}
device=${5:-cuda}
tokenizer_steps=${6:-1500}
mkdir -p "$out"
bench=$(dirname "$0")

pretrain() {  # pretrain BACKEND STAGES_RECIPE: the small preset at 32 px, float32
    local backend=$1 recipe=$2
    printf 'resolution: 32\nmixed_precision: "no"\ncheckpoint_every: 1000\npreview_every: 1000\nstages_recipe:\n%s\n' \
        "$recipe" >"$out/$backend.yaml"
    local started=$SECONDS
    emu pretrain --backend "$backend" --preset small --data "$pool" --out "$out/$backend" \
        --config "$out/$backend.yaml" --device "$device" >"$out/$backend-pretrain.log" 2>&1
    echo "$backend pretrain: exit $? in $((SECONDS - started)) s"
}

pretrain pixel "  denoiser: {steps: $steps, batch_size: $batch}" &
pretrain masked "  tokenizer: {steps: $tokenizer_steps, batch_size: $batch}
  transformer: {steps: $steps, batch_size: $batch}" &
wait

for backend in pixel masked; do
    for guidance in 5 10; do
        echo "== $backend, guidance $guidance"
        python "$bench/generator_faithfulness.py" "$out/$backend" --per-subject 16 \
            --guidance "$guidance" --device "$device" \
            --json "$out/$backend-faithfulness-g$guidance.json" 2>&1 | grep -v '^{' | tail -6
    done
done
