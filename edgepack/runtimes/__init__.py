"""Runtime registry. One module per runtime; each registers one class here, imported lazily."""

from __future__ import annotations

import importlib

from edgepack.errors import UsageError
from edgepack.runtimes.base import Runtime, RuntimeBase

# name -> "module:Class"; modules are imported only when the runtime is used, so `edgepack --help` stays light.
REGISTRY: dict[str, str] = {
    "onnxruntime": "edgepack.runtimes.onnxruntime:OnnxRuntime",
    "executorch": "edgepack.runtimes.executorch:ExecuTorchRuntime",
    "litert": "edgepack.runtimes.litert:LiteRTRuntime",
    "openvino": "edgepack.runtimes.openvino:OpenVinoRuntime",
    "onnxruntime-gpu": "edgepack.runtimes.onnxruntime_gpu:OnnxRuntimeGpu",
}


def runtime_class(name: str) -> type[RuntimeBase]:
    """The runtime's class, for its declared capabilities; importing it imports neither torch nor the runtime."""
    if name not in REGISTRY:
        raise UsageError(f"unknown runtime {name!r}; known runtimes: {', '.join(sorted(REGISTRY))}")
    module_name, cls_name = REGISTRY[name].split(":")
    cls: type[RuntimeBase] = getattr(importlib.import_module(module_name), cls_name)
    return cls


def qat_runtimes() -> list[str]:
    """Registered runtimes that declare a quantization-aware training path."""
    return sorted(name for name in REGISTRY if runtime_class(name).supports_qat)


def get_runtime(name: str) -> Runtime:
    return runtime_class(name)()  # type: ignore[return-value]
