#!/usr/bin/env bash
# The project's GPU run, for a CUDA machine with emu and its backends installed:
#   1. every backend end to end on the GPU (tiny preset): pretrain, then generate twice with the
#      same seed, which must give the same images; a crash or a difference fails the run;
#   2. bench/train_throughput.py on the GPU (the trainer against the plain loop);
#   3. bench/precision_speedup.py on the GPU (bf16 against float32, every stage);
#   4. bench/open_model_memory.py: full quality-tuning steps of SDXL's UNet and Flux.1 dev's
#      transformer at their real sizes, peak memory and images/s (Flux: 8-bit AdamW, no EMA,
#      10 bytes a parameter, 119 GB: an H200; it runs out of memory on an 80 GB H100).
# Each part runs even if one before it failed; the exit status counts the failures.
#
#     bash bench/gpu_check.sh [OUT] [BATCH] [DEVICE]
# OUT: where logs and JSON go (default gpu-run); BATCH: the benches' batch (default 128);
# DEVICE: cuda (default), or cpu to try the script itself on a machine without a GPU.
set -uo pipefail
out=${1:-gpu-run}
batch=${2:-128}
device=${3:-cuda}
mkdir -p "$out"
failures=0
step() {  # step NAME COMMAND...: run, keep its log, count a failure
    local name=$1
    shift
    echo "== $name"
    local started=$SECONDS
    if "$@" >"$out/$name.log" 2>&1; then
        echo "   ok in $((SECONDS - started)) s"
    else
        echo "   FAILED (exit $?) in $((SECONDS - started)) s; the end of its log:"
        tail -c 3000 "$out/$name.log" | tr '\r' '\n' | tail -25
        failures=$((failures + 1))
    fi
}

same_images() {  # same_images A B: the PNG files of two generate runs are byte-identical
    local a=$1 b=$2
    [ -n "$(ls "$a"/*.png 2>/dev/null)" ] || { echo "no images in $a"; return 1; }
    for file in "$a"/*.png; do
        cmp -s "$file" "$b/$(basename "$file")" || { echo "differs: $(basename "$file")"; return 1; }
    done
}

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python -c 'import torch; print("torch", torch.__version__, "cuda", torch.cuda.is_available())'
emu backends

step synth emu data synth --num-images 256 --out "$out/data" --size 64
for backend in latent masked pixel; do
    run="$out/$backend"
    step "$backend-pretrain" emu pretrain --backend "$backend" --preset tiny --data "$out/data" \
        --out "$run" --steps 20 --batch-size 16 --device "$device"
    for i in 1 2; do
        step "$backend-generate-$i" emu generate --model "$run" -n 2 --sampling-steps 8 --seed 3 \
            --device "$device" --out "$run/samples-$i" "a red star on snow" "a blue circle on grass"
    done
    step "$backend-same-seed" same_images "$run/samples-1" "$run/samples-2"
done

step train-throughput python bench/train_throughput.py --device "$device" --preset small \
    --batch-size "$batch" --steps 40 --json "$out/train_throughput_$device.json"
step precision-speedup python bench/precision_speedup.py --device "$device" --preset small \
    --batch-size "$batch" --steps 40 --json "$out/precision_speedup_$device.json"
step open-model-sdxl python bench/open_model_memory.py --family sdxl --device "$device" \
    --batch-size 4 --gradient-checkpointing --json "$out/open_model_sdxl.json"
step open-model-flux python bench/open_model_memory.py --family flux --device "$device" \
    --batch-size 1 --optimizer adamw8bit --no-ema --gradient-checkpointing \
    --json "$out/open_model_flux.json"

for name in train-throughput precision-speedup; do  # their tables, without progress bars
    echo "== $name"
    tr '\r' '\n' <"$out/$name.log" | grep -E '^(backend|latent|masked|pixel) +' || true
done
cat "$out"/open_model_*.json 2>/dev/null
echo "failures: $failures"
exit "$failures"
