# edgepack for the cuda target: ONNX Runtime's GPU build (CUDAExecutionProvider) beside a CUDA build of torch.
# Build context: the repository root.
#   docker build -f docker/cuda.Dockerfile -t edgepack:cuda .
#   docker run --rm --gpus all -v "$PWD/out:/out" -u "$(id -u):$(id -g)" edgepack:cuda \
#       build --model zoo:resnet18-cifar --target cuda --out /out
# CUDA 12.8 with cuDNN 9: what onnxruntime-gpu 1.2x's default wheels are built against (the host needs an NVIDIA
# driver for CUDA 12.8 or newer and the NVIDIA Container Toolkit for --gpus).
FROM nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04

# Empty: torch from the default index (its Linux wheel is a CUDA build). Set it to one of PyTorch's per-CUDA-version
# wheel indexes to choose another CUDA build; it is used for the torch install only.
ARG TORCH_INDEX_URL=
# onnxruntime-gpu is pinned here (pyproject.toml only asks for >=1.20) to a release built for CUDA 12 and cuDNN 9,
# the libraries of the base image above; change both together.
ARG ONNXRUNTIME_GPU_VERSION=1.22.0

SHELL ["/bin/bash", "-o", "pipefail", "-c"]

# The distribution's Python (3.12 on Ubuntu 24.04) in a virtual environment. DL3008 (unpinned apt packages): the
# base image's tag fixes the Ubuntu release, and Ubuntu drops superseded package versions from its archive, so exact
# apt pins would break this build within weeks.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv \
    && rm -rf /var/lib/apt/lists/*

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/edgepack \
    PATH=/opt/edgepack/bin:$PATH \
    MPLCONFIGDIR=/tmp/matplotlib \
    XDG_CACHE_HOME=/tmp/cache

WORKDIR /src
COPY constraints.txt ./

# torch first, alone and pinned (the pin in pyproject.toml); from TORCH_INDEX_URL when set. No constraints in this
# step: a torch wheel index carries only some versions of torch's dependencies; the next step, through the
# constraints, moves them to the tested versions. constraints.txt pins the CPU torch wheel (torch==X+cpu) and the
# CPU onnxruntime: both lines are dropped, and onnxruntime-gpu is pinned in their place.
RUN python3 -m venv "$VIRTUAL_ENV" \
    && grep -v -e '^torch==' -e '^onnxruntime==' constraints.txt > /tmp/constraints.txt \
    && echo "onnxruntime-gpu==${ONNXRUNTIME_GPU_VERSION}" >> /tmp/constraints.txt \
    && if [ -n "$TORCH_INDEX_URL" ]; then export PIP_INDEX_URL="$TORCH_INDEX_URL"; fi \
    && pip install --no-cache-dir torch==2.13.0

COPY pyproject.toml README.md ./
COPY edgepack ./edgepack
COPY targets ./targets

# The `cuda` extra ONLY. Never add `onnx` (nor `all`, which includes it): onnxruntime and onnxruntime-gpu
# both install the module `onnxruntime`, and whichever lands last silently replaces the other's files.
RUN pip install --no-cache-dir -c /tmp/constraints.txt '/src[cuda]' \
    && edgepack --help > /dev/null

# Non-root. A bind-mounted /out is owned by its host user: run with -u "$(id -u):$(id -g)" to write into it.
RUN useradd --create-home --uid 10001 --user-group edgepack \
    && mkdir -p /out \
    && chown 10001:10001 /out
USER 10001:10001
WORKDIR /home/edgepack
VOLUME ["/out"]

ENTRYPOINT ["edgepack"]
CMD ["--help"]
