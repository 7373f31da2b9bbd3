# The pipeline's CUDA image, built for NVIDIA H100/H200 (sm_90), B200 (sm_100) and RTX 50xx/PRO 6000 (sm_120).
#   docker build -t gemma-tr .
#   docker run --gpus all -v $PWD:/workspace/repo -v /workspace/.cache:/workspace/.cache \
#     -e HF_TOKEN -e AWS_ACCESS_KEY_ID -e AWS_SECRET_ACCESS_KEY gemma-tr
# CUDA 13.0 because PyPI's torch 2.13 is built for it (PyTorch dropped CUDA 12.8 builds in 2.12); the host needs
# an NVIDIA driver >= 580, which the entry point checks. Not built in this repository's CI (no Docker engine
# there): tests/test_docker.py resolves every install step against PyPI instead; see README "Docker image".
FROM nvidia/cuda:13.0.3-cudnn-devel-ubuntu24.04

SHELL ["/bin/bash", "-o", "pipefail", "-c"]

# Caches live on the mounted volume, not in the image; NCCL settings that are safe on a single host.
# TORCH_CUDA_ARCH_LIST must be set: without it DeepSpeed compiles for 6.0-7.0, which nvcc 13 no longer supports.
# (DL3064 reads "TOKEN" in TOKENIZERS_PARALLELISM as a secret; no secret is set here: HF_TOKEN comes at run time.)
# hadolint ignore=DL3064
ENV DEBIAN_FRONTEND=noninteractive \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    HF_HOME=/workspace/.cache/huggingface \
    PIP_CACHE_DIR=/workspace/.cache/pip \
    DVC_NO_ANALYTICS=1 \
    TORCH_CUDA_ARCH_LIST="9.0;10.0;12.0" \
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
COPY requirements.txt requirements-gpu.txt requirements-gguf.txt ./
# torch first, the version CI pins in requirements.txt: on Linux x86-64 PyPI's wheel is the CUDA 13.0 build, the
# base image's CUDA, so nvcc matches torch.version.cuda for DeepSpeed's Adam ops, compiled here (DeepSpeed
# refuses a CUDA 13 minor mismatch). The last line stops the build if they ever disagree.
# setuptools, wheel, scikit-build-core, cmake: DeepSpeed and llama-cpp-python build from source, and without build
# isolation they need them here. llama.cpp's converter ships only in llama-cpp-python's source package: it is
# extracted into /opt/venv/share/llama.cpp, where the export stage runs it (pipeline/gguf.py).
RUN pip install --no-cache-dir "$(grep '^torch==' requirements.txt)" \
    && pip install --no-cache-dir setuptools==80.9.0 wheel==0.45.1 scikit-build-core==1.1.2 cmake==4.1.2 \
    && DS_BUILD_OPS=0 DS_BUILD_CPU_ADAM=1 DS_BUILD_FUSED_ADAM=1 DS_BUILD_UTILS=1 \
       CMAKE_ARGS="-DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=OFF -DLLAMA_BUILD_TOOLS=OFF -DLLAVA_BUILD=OFF -DGGML_NATIVE=OFF" \
       pip install --no-cache-dir --no-build-isolation -r requirements-gpu.txt \
    && pip download --no-cache-dir --no-deps --no-binary llama-cpp-python -d /tmp/llama \
       "$(grep '^llama-cpp-python==' requirements-gguf.txt)" \
    && mkdir -p /opt/venv/share/llama.cpp \
    && tar -xzf /tmp/llama/llama_cpp_python-*.tar.gz -C /opt/venv/share/llama.cpp --strip-components=3 --wildcards \
       '*/vendor/llama.cpp/convert_hf_to_gguf.py' '*/vendor/llama.cpp/conversion/*' '*/vendor/llama.cpp/gguf-py/*' \
    && rm -rf /tmp/llama \
    && python -c "import os, torch, deepspeed, bitsandbytes; \
assert os.environ['CUDA_VERSION'].startswith(torch.version.cuda + '.'), (torch.version.cuda, os.environ['CUDA_VERSION']); \
print(torch.__version__, torch.version.cuda, deepspeed.__version__, bitsandbytes.__version__)"

COPY docker/entrypoint.sh /usr/local/bin/entrypoint
WORKDIR /workspace/repo
ENTRYPOINT ["/usr/local/bin/entrypoint"]
