#!/usr/bin/env bash
# The image's default command: run the pipeline in the mounted repository (/workspace/repo by default).
#   no arguments      dvc repro on one GPU, or dvc exp run with DeepSpeed ZeRO-2 over all visible GPUs
#   arguments         passed to `dvc exp run` (e.g. -S train.lora_r=32), with the GPU settings added
#   ACCELERATE_CONFIG overrides the launcher config chosen from the GPU count
# Before anything runs it checks, one line each if not: a GPU is visible, its driver is new enough for the
# image's CUDA, params.yaml is valid. Otherwise a wrong pod would fail minutes later inside torch or a stage.
set -euo pipefail

stop() { echo "entrypoint: $*" >&2; exit 1; }

# NVIDIA's minimum driver for each CUDA major (minor-version compatibility): CUDA_VERSION is set by the
# nvidia/cuda base image, and the Dockerfile's build checks that torch was built for the same CUDA.
cuda=${CUDA_VERSION:-}
[ -n "$cuda" ] || stop "CUDA_VERSION is unset: run the image built FROM nvidia/cuda, not this script elsewhere"
case ${cuda%%.*} in
  13) need=580 ;;
  12) need=525 ;;
  *) stop "no minimum driver known for CUDA $cuda" ;;
esac

start="start the container with --gpus all on a host with NVIDIA driver >= $need (CUDA ${cuda%%.*})"
command -v nvidia-smi >/dev/null || stop "no nvidia-smi: this container sees no NVIDIA GPU; $start"
if ! drivers=$(nvidia-smi --query-gpu=driver_version --format=csv,noheader 2>&1); then
  stop "nvidia-smi sees no usable GPU ($(head -n 1 <<<"$drivers")); $start"
fi
driver=$(head -n 1 <<<"$drivers")
[[ $driver =~ ^[0-9]+(\.[0-9]+)*$ ]] || stop "nvidia-smi lists no GPU (it printed: ${driver:-nothing}); $start"
if (( ${driver%%.*} < need )); then
  stop "NVIDIA driver $driver is too old for this image's CUDA $cuda, which needs driver >= $need:" \
    "pick a pod or host with driver >= $need (on Runpod: CUDA version filter ${cuda%.*} or newer)"
fi
gpus=$(grep -c . <<<"$drivers")

cd "${REPO_DIR:-/workspace/repo}"
python -m pipeline.check params.yaml

config=${ACCELERATE_CONFIG:-}
if [ -z "$config" ]; then
  if [ "$gpus" -gt 1 ]; then config=configs/accelerate/zero2.yaml; else config=configs/accelerate/single_gpu.yaml; fi
fi
echo "entrypoint: $gpus GPU(s), driver $driver, CUDA $cuda, accelerate config $config"
if [ $# -eq 0 ] && [ "$gpus" -eq 1 ] && [ -z "${ACCELERATE_CONFIG:-}" ]; then
  exec dvc repro
fi
exec dvc exp run -S "train.accelerate_config=$config" -S "train.num_processes=$gpus" "$@"
