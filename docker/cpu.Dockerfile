# edgepack on a CPU: every CPU runtime (ONNX Runtime, ExecuTorch, LiteRT, OpenVINO), no dev tools, no CUDA.
# Build context: the repository root.
#   docker build -f docker/cpu.Dockerfile -t edgepack:cpu .
#   docker run --rm -v "$PWD/out:/out" -u "$(id -u):$(id -g)" edgepack:cpu \
#       build --model zoo:digits-cnn --target x86-cpu --budget 1MB --eval zoo --out /out
FROM python:3.11.13-slim-bookworm

# Empty: torch comes from the default index (on Linux a large wheel that bundles CUDA). Set it to PyTorch's
# CPU-only wheel index for a much smaller image; it is used for the torch install only.
ARG TORCH_INDEX_URL=

# MPLCONFIGDIR and XDG_CACHE_HOME (matplotlib's config, edgepack's build cache) are writable for any --user.
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/edgepack \
    PATH=/opt/edgepack/bin:$PATH \
    MPLCONFIGDIR=/tmp/matplotlib \
    XDG_CACHE_HOME=/tmp/cache

WORKDIR /src
COPY constraints.txt ./

# torch first, alone and pinned (the pin in pyproject.toml), as `make setup` does; from TORCH_INDEX_URL when set.
# No constraints in this step: a torch wheel index carries only some versions of torch's dependencies; the next
# step, through constraints.txt, moves them to the tested versions. constraints.txt's own torch line names the CPU
# wheel's local version (torch==X+cpu), which the default index lacks, so it is dropped: the torch==X pin (which
# X+cpu also satisfies) holds torch instead.
RUN python -m venv "$VIRTUAL_ENV" \
    && grep -v '^torch==' constraints.txt > /tmp/constraints.txt \
    && if [ -n "$TORCH_INDEX_URL" ]; then export PIP_INDEX_URL="$TORCH_INDEX_URL"; fi \
    && pip install --no-cache-dir torch==2.13.0

COPY pyproject.toml README.md ./
COPY edgepack ./edgepack
COPY targets ./targets

# Not editable and not [all]: the runtimes only (no dev tools), and never `cuda` (it replaces onnxruntime).
RUN pip install --no-cache-dir -c /tmp/constraints.txt '/src[onnx,executorch,litert,openvino]' \
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
