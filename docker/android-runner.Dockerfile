# Builds the two Android arm64 (arm64-v8a) runner binaries that `edgepack build --target android-arm64 --device adb`
# pushes to a phone: ExecuTorch's executor_runner (with the XNNPACK backend) and LiteRT/TensorFlow Lite's
# benchmark_model. edgepack never downloads binaries; this image builds them from pinned sources.
# Build context: the repository root (only constraints.txt is copied in).
#   docker build -f docker/android-runner.Dockerfile -t edgepack-android-runners .
#   docker run --rm -u "$(id -u):$(id -g)" -v "$PWD/runners:/out" edgepack-android-runners
#   edgepack build ... --target android-arm64 --device adb \
#       --runner executorch=runners/executor_runner --runner litert=runners/benchmark_model
FROM ubuntu:24.04 AS build

# Android NDK release (the Linux x86-64 zip).
ARG NDK_VERSION=r27c
# Oldest Android API level the binaries run on.
ARG ANDROID_PLATFORM=android-26
# ExecuTorch source tag: "v" + the executorch== pin in pyproject.toml (tests/test_docker.py holds them together),
# so the runner reads the .pte files the installed exporter writes.
ARG EXECUTORCH_TAG=v1.5.1
# TensorFlow source tag whose tensorflow/lite CMake build provides benchmark_model.
ARG TENSORFLOW_TAG=v2.20.0
# torch (pinned as in pyproject.toml) is needed on the build host only: ExecuTorch's kernel-registration codegen
# runs torchgen, and its optimized kernels compile against torch's ATen vector headers. Set TORCH_INDEX_URL to
# PyTorch's CPU-only wheel index to avoid downloading the CUDA-bundled wheel; it is used for the torch install only.
ARG TORCH_INDEX_URL=
# Parallel compile jobs; empty means one per CPU.
ARG BUILD_JOBS=

SHELL ["/bin/bash", "-o", "pipefail", "-c"]

# DL3008 (unpinned apt packages): the base image's tag fixes the Ubuntu release, and Ubuntu drops superseded
# package versions from its archive, so exact apt pins would break this build within weeks. The toolchain that
# matters is pinned: the NDK (clang for the target), CMake (below), and the source tags.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends \
        build-essential ca-certificates curl git ninja-build python3 python3-venv unzip \
    && rm -rf /var/lib/apt/lists/*

ENV ANDROID_NDK=/opt/android-ndk \
    PATH=/opt/buildenv/bin:$PATH

RUN curl -fsSL -o /tmp/ndk.zip "https://dl.google.com/android/repository/android-ndk-${NDK_VERSION}-linux.zip" \
    && unzip -q /tmp/ndk.zip -d /opt \
    && mv "/opt/android-ndk-${NDK_VERSION}" "$ANDROID_NDK" \
    && rm /tmp/ndk.zip

# CMake from its Python wheel, pinned: 3.31 (CMake 4 rejects the old cmake_minimum_required of some dependencies);
# pyyaml at the version constraints.txt pins; then torch alone, pinned, from TORCH_INDEX_URL when set.
COPY constraints.txt /tmp/constraints.txt
RUN python3 -m venv /opt/buildenv \
    && grep -v '^torch==' /tmp/constraints.txt > /tmp/build-constraints.txt \
    && pip install --no-cache-dir -c /tmp/build-constraints.txt cmake==3.31.10 pyyaml \
    && if [ -n "$TORCH_INDEX_URL" ]; then export PIP_INDEX_URL="$TORCH_INDEX_URL"; fi \
    && pip install --no-cache-dir torch==2.13.0

# ---- ExecuTorch executor_runner ----------------------------------------------------------------------------------
RUN git clone --depth 1 --branch "${EXECUTORCH_TAG}" --recurse-submodules --shallow-submodules \
        https://github.com/pytorch/executorch.git /build/executorch

# Release builds turn ExecuTorch's logging off by default, but edgepack parses executor_runner's log lines
# ("Iteration i of n: t ms"), so logging is on; the posix PAL prints them to the terminal adb reads (the android
# PAL would send them to logcat). Quantized kernels run any quantize/dequantize op left outside XNNPACK.
RUN cmake -S /build/executorch -B /build/executorch-android -G Ninja \
        -DCMAKE_TOOLCHAIN_FILE="$ANDROID_NDK/build/cmake/android.toolchain.cmake" \
        -DANDROID_ABI=arm64-v8a \
        -DANDROID_PLATFORM="${ANDROID_PLATFORM}" \
        -DCMAKE_BUILD_TYPE=Release \
        -DPYTHON_EXECUTABLE=/opt/buildenv/bin/python \
        -DEXECUTORCH_BUILD_EXECUTOR_RUNNER=ON \
        -DEXECUTORCH_BUILD_EXTENSION_DATA_LOADER=ON \
        -DEXECUTORCH_BUILD_EXTENSION_FLAT_TENSOR=ON \
        -DEXECUTORCH_BUILD_EXTENSION_EVALUE_UTIL=ON \
        -DEXECUTORCH_BUILD_EXTENSION_RUNNER_UTIL=ON \
        -DEXECUTORCH_BUILD_XNNPACK=ON \
        -DEXECUTORCH_BUILD_KERNELS_OPTIMIZED=ON \
        -DEXECUTORCH_BUILD_KERNELS_QUANTIZED=ON \
        -DEXECUTORCH_ENABLE_LOGGING=ON \
        -DEXECUTORCH_LOG_LEVEL=Info \
        -DEXECUTORCH_PAL_DEFAULT=posix \
    && cmake --build /build/executorch-android --target executor_runner -j "${BUILD_JOBS:-$(nproc)}"

# ---- LiteRT / TensorFlow Lite benchmark_model (CMake, not Bazel) ------------------------------------------------
RUN git clone --depth 1 --branch "${TENSORFLOW_TAG}" https://github.com/tensorflow/tensorflow.git /build/tensorflow

# Cross-compiling TensorFlow Lite needs host builds of its code generators (flatc, protoc) first.
RUN cmake -S /build/tensorflow/tensorflow/lite/tools/cmake/native_tools -B /build/tflite-host-tools \
        -DCMAKE_BUILD_TYPE=Release \
        -DCMAKE_INSTALL_PREFIX=/opt/tflite-host-tools \
    && cmake --build /build/tflite-host-tools -j "${BUILD_JOBS:-$(nproc)}" \
    && cmake --install /build/tflite-host-tools

RUN cmake -S /build/tensorflow/tensorflow/lite -B /build/tflite-android -G Ninja \
        -DCMAKE_TOOLCHAIN_FILE="$ANDROID_NDK/build/cmake/android.toolchain.cmake" \
        -DANDROID_ABI=arm64-v8a \
        -DANDROID_PLATFORM="${ANDROID_PLATFORM}" \
        -DCMAKE_BUILD_TYPE=Release \
        -DTFLITE_HOST_TOOLS_DIR=/opt/tflite-host-tools \
        -DTFLITE_ENABLE_XNNPACK=ON \
        -DTFLITE_ENABLE_GPU=OFF \
    && cmake --build /build/tflite-android --target benchmark_model -j "${BUILD_JOBS:-$(nproc)}"

# Both binaries link the NDK's C++ runtime statically: each is one file to push. Stripped to shrink the push.
RUN mkdir -p /runners \
    && cp /build/executorch-android/executor_runner /build/tflite-android/tools/benchmark/benchmark_model /runners/ \
    && "$ANDROID_NDK/toolchains/llvm/prebuilt/linux-x86_64/bin/llvm-strip" /runners/executor_runner \
        /runners/benchmark_model \
    && chmod 0755 /runners/*

# ---- the image that hands the binaries out -----------------------------------------------------------------------
FROM ubuntu:24.04
COPY --from=build /runners /runners
# Non-root; with a bind mount, run as the host user (-u "$(id -u):$(id -g)") so /out stays writable and yours.
USER 10001:10001
VOLUME ["/out"]
ENTRYPOINT ["cp", "-v", "/runners/executor_runner", "/runners/benchmark_model", "/out/"]
