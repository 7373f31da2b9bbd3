#!/usr/bin/env bash
# The image's default command: run the pipeline in the mounted repository (/workspace/repo by default).
#   no arguments      dvc repro on one GPU, or dvc exp run with DeepSpeed ZeRO-2 over all visible GPUs
#   arguments         passed to `dvc exp run` (e.g. -S train.lora_r=32), with the GPU settings added
#   ACCELERATE_CONFIG overrides the launcher config chosen from the GPU count
set -euo pipefail
cd "${REPO_DIR:-/workspace/repo}"
gpus=$(nvidia-smi --list-gpus 2>/dev/null | wc -l || echo 0)
config=${ACCELERATE_CONFIG:-}
if [ -z "$config" ]; then
  if [ "$gpus" -gt 1 ]; then config=configs/accelerate/zero2.yaml; else config=configs/accelerate/single_gpu.yaml; fi
fi
processes=$(( gpus > 1 ? gpus : 1 ))
echo "entrypoint: $gpus GPU(s), accelerate config $config, $processes process(es)"
if [ $# -eq 0 ] && [ "$processes" -eq 1 ] && [ -z "${ACCELERATE_CONFIG:-}" ]; then
  exec dvc repro
fi
exec dvc exp run -S "train.accelerate_config=$config" -S "train.num_processes=$processes" "$@"
