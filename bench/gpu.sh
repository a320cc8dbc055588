#!/usr/bin/env bash
# The GPU table of docs/benchmarks.md in at most 8 minutes on one CUDA GPU (A100/H100 class, >= 40 GB):
# experiment=frcnn_a100 as users run it (cache source, 800-px crops at the evaluation scale, logging,
# checkpoints, validation inside fit), batch 16, 8 loader workers, at max side 1333 and 2048, per precision
# and option. Each step writes JSON with the device name under bench/results/; stages that hit their time
# limit keep the runs they finished (the JSON is rewritten after every run).
#
#   bash bench/gpu.sh            # on the GPU machine, from anywhere
#   # the same stages on the CPU at toy size (arguments given later win): checks the script, not a figure
#   bash bench/gpu.sh --cpu --quick --runs 32-true --max-sides 256 --height 512 --crop-size 128 --batch-size 2 \
#       --eval-batch-size 1 --warmup 1 --steps 2 --val-every 1 --val-batches 1 --workers 1 --data-dir /tmp/gpu_sh_check
#
# Budget (seconds): data 120 (synthesis, conversion, cache of 8 patients at 4096x2560), table 240 (4 runs x 2
# max sides), compile 120 (bf16-mixed+cl+compile at 2048). Extra arguments go to every bench/train_throughput.py call.
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
stamp=$(date -u +%Y%m%dT%H%M)
out=bench/results
mkdir -p "$out"
common=(--workers "${WORKERS:-8}" --patients 8 --warmup 10 --steps 30 --val-every 20 --val-batches 4)
python -c "import torch; print('device:', torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'CPU')"

# 1. Data, once (a run with no steps would still build it; this keeps its time out of the table's budget).
timeout 150 python bench/train_throughput.py "${common[@]}" --runs 32-true --max-sides 1333 2048 --steps 1 \
    --warmup 0 --val-every 1 --val-batches 1 --json "$out/gpu_${stamp}_data.json" "$@" || echo "data stage: exit $?"

# 2. The table: precision and channels_last at both scales.
timeout 240 python bench/train_throughput.py "${common[@]}" --runs 32-true 16-mixed bf16-mixed bf16-mixed+cl \
    --max-sides 1333 2048 --json "$out/gpu_${stamp}_table.json" "$@" || echo "table stage: exit $?"

# 3. torch.compile of the backbone (compilation in the warm-up steps, not in the figures).
timeout 120 python bench/train_throughput.py "${common[@]}" --runs bf16-mixed+cl+compile --max-sides 2048 \
    --json "$out/gpu_${stamp}_compile.json" "$@" || echo "compile stage: exit $?"

ls -l "$out"/gpu_"${stamp}"_*.json
