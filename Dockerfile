# The pipeline's CUDA image, built for NVIDIA B200 (sm_100) and H100/H200 (sm_90).
#   docker build -t gemma-tr .
#   docker run --gpus all -v $PWD:/workspace/repo -v /workspace/.cache:/workspace/.cache \
#     -e HF_TOKEN -e AWS_ACCESS_KEY_ID -e AWS_SECRET_ACCESS_KEY gemma-tr
# Not built in this repository's CI (no Docker engine there); see README "Docker image".
FROM nvidia/cuda:12.8.1-cudnn-devel-ubuntu24.04

SHELL ["/bin/bash", "-o", "pipefail", "-c"]

# Caches live on the mounted volume, not in the image; NCCL settings that are safe on a single host.
# (DL3064 reads "TOKEN" in TOKENIZERS_PARALLELISM as a secret; no secret is set here: HF_TOKEN comes at run time.)
# hadolint ignore=DL3064
ENV DEBIAN_FRONTEND=noninteractive \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    HF_HOME=/workspace/.cache/huggingface \
    PIP_CACHE_DIR=/workspace/.cache/pip \
    DVC_NO_ANALYTICS=1 \
    TORCH_CUDA_ARCH_LIST="9.0;10.0" \
    NCCL_ASYNC_ERROR_HANDLING=1 \
    NCCL_DEBUG=WARN \
    TOKENIZERS_PARALLELISM=false \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH

RUN apt-get update \
    && apt-get install -y --no-install-recommends \
        python3.12=3.12.* python3.12-venv=3.12.* python3.12-dev=3.12.* \
        git=1:2.43.* make=4.3-* build-essential=12.10* ninja-build=1.11.* \
    && rm -rf /var/lib/apt/lists/* \
    && python3.12 -m venv /opt/venv

WORKDIR /opt/build
COPY requirements.txt requirements-gpu.txt ./
# torch first, the pinned version from requirements.txt in its CUDA 12.8 build (the base image's nvcc must
# match it for DeepSpeed's ops, which are compiled here for sm_90 and sm_100: those ZeRO-2 with Adam uses).
# Cython, setuptools, wheel: pybloomfilter3 builds from source, and without build isolation it needs them here.
RUN pip install --no-cache-dir --index-url https://download.pytorch.org/whl/cu128 "$(grep '^torch==' requirements.txt)" \
    && pip install --no-cache-dir Cython==3.1.2 setuptools==80.9.0 wheel==0.45.1 \
    && DS_BUILD_OPS=0 DS_BUILD_CPU_ADAM=1 DS_BUILD_FUSED_ADAM=1 DS_BUILD_UTILS=1 \
       pip install --no-cache-dir --no-build-isolation -r requirements-gpu.txt \
    && python -c "import torch, deepspeed, bitsandbytes; print(torch.__version__, torch.cuda.get_arch_list())"

COPY docker/entrypoint.sh /usr/local/bin/entrypoint
WORKDIR /workspace/repo
ENTRYPOINT ["/usr/local/bin/entrypoint"]
