#!/usr/bin/env bash
# FlexUNet GPU check: the benchmark's stroke-config training and inference for a few steps, with
# XLA and float16 mixed precision (float32 beside it for comparison), on a CUDA machine.
# Prints images/s per variant and the GPU utilisation nvidia-smi sampled while it ran.
#
#   pip install -e ".[gpu]"                        # tensorflow[and-cuda]
#   benchmarks/gpu_check.sh [OUT_DIR]              # default OUT_DIR: ./gpu-check
#
# Environment: PYTHON (default python), STEPS (training steps per timing, default 10),
# REPEATS (timings, default 3), IMAGES (N, default 16), INFER_IMAGES (default 16).
# Writes OUT_DIR/bench.json (the figures), OUT_DIR/bench.txt (the table) and
# OUT_DIR/nvidia-smi.csv (one utilisation sample per second).
set -euo pipefail

OUT=${1:-gpu-check}
PY=${PYTHON:-python}
STEPS=${STEPS:-10}
REPEATS=${REPEATS:-3}
IMAGES=${IMAGES:-16}
INFER_IMAGES=${INFER_IMAGES:-16}

if ! command -v nvidia-smi >/dev/null 2>&1; then
    echo "gpu_check: nvidia-smi not found; this check needs a CUDA GPU and its driver" >&2
    exit 2
fi
if ! "$PY" -c "import sys, tensorflow as tf; sys.exit(0 if tf.config.list_physical_devices('GPU') else 1)" \
        2>/dev/null; then
    echo "gpu_check: TensorFlow sees no GPU; install flexunet[gpu] (tensorflow[and-cuda]) and check CUDA" >&2
    exit 3
fi

mkdir -p "$OUT"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv
nvidia-smi --query-gpu=timestamp,utilization.gpu,utilization.memory,memory.used \
    --format=csv,noheader,nounits -l 1 > "$OUT/nvidia-smi.csv" &
SAMPLER=$!
trap 'kill "$SAMPLER" 2>/dev/null || true' EXIT

"$PY" -m flexunet bench --configs stroke --xla on --precision float32,float16 \
    --steps "$STEPS" --repeats "$REPEATS" --images "$IMAGES" --infer-images "$INFER_IMAGES" \
    --no-memory --workdir "$OUT/work" --out "$OUT/bench.json" --quiet | tee "$OUT/bench.txt"

kill "$SAMPLER" 2>/dev/null || true
wait "$SAMPLER" 2>/dev/null || true

"$PY" - "$OUT/bench.json" "$OUT/nvidia-smi.csv" <<'PYEOF'
import json, statistics, sys

report = json.load(open(sys.argv[1]))
print("\nGPU check (stroke config, 512x512, XLA on):")
for c in report["configs"]:
    for v in c["variants"]:
        gpu = f", GPU memory peak {v['gpu_peak_mib']:.0f} MiB" if v.get("gpu_peak_mib") else ""
        print(f"  {v['precision']:>8}: training {v['disk']['images_per_s']:.2f} images/s from disk "
              f"({v['memory']['images_per_s']:.2f} in memory), inference "
              f"{v['infer']['streaming']['images_per_s']:.2f} images/s streaming{gpu}")
util = []
for line in open(sys.argv[2]):
    parts = [p.strip() for p in line.split(",")]
    if len(parts) >= 2 and parts[1].isdigit():
        util.append(int(parts[1]))
busy = [u for u in util if u > 0]
if util:
    print(f"  GPU utilisation over {len(util)} one-second samples: mean {statistics.mean(util):.0f}%, "
          f"mean while busy {statistics.mean(busy) if busy else 0:.0f}%, max {max(util)}%")
else:
    print("  no GPU utilisation samples were recorded")
PYEOF
