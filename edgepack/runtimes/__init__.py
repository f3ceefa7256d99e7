"""Runtime registry. One module per runtime; each registers one class here, imported lazily."""

from __future__ import annotations

import importlib

from edgepack.errors import UsageError
from edgepack.runtimes.base import Runtime

# name -> "module:Class"; modules are imported only when the runtime is used, so `edgepack --help` stays light.
REGISTRY: dict[str, str] = {
    "onnxruntime": "edgepack.runtimes.onnxruntime:OnnxRuntime",
    "executorch": "edgepack.runtimes.executorch:ExecuTorchRuntime",
    "litert": "edgepack.runtimes.litert:LiteRTRuntime",
}


def get_runtime(name: str) -> Runtime:
    if name not in REGISTRY:
        raise UsageError(f"unknown runtime {name!r}; known runtimes: {', '.join(sorted(REGISTRY))}")
    module_name, cls_name = REGISTRY[name].split(":")
    return getattr(importlib.import_module(module_name), cls_name)()
