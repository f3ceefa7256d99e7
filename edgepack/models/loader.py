"""Turn a model spec (`--model`) into a ModelBundle.

Specs: `zoo:NAME`; `path/to/file.py:callable` or `package.module:callable` (returning a Module, or a Module and
example inputs); a torch.export `.pt2`; a checkpoint `.pt`/`.pth` with `--factory SPEC` (state dict, loaded with
weights_only=True) or with `--trust-checkpoint` (a whole pickled Module).
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

import torch
from torch import nn

from edgepack.errors import UsageError, one_line
from edgepack.models import zoo
from edgepack.models.bundle import ModelBundle
from edgepack.models.outputs import OutputSelector, describe_output
from edgepack.models.request import ModelRequest
from edgepack.records import PassRecord, Provenance
from edgepack.training import set_eval


@dataclass(frozen=True)
class _Loaded:
    module: nn.Module
    example_inputs: Optional[tuple[torch.Tensor, ...]]
    kind: str
    name: str
    zoo_entry: Optional[zoo.ZooEntry] = None
    passes: tuple[PassRecord, ...] = ()  # compression already applied (a .pt2 from `edgepack compress`)


def load_model(request: ModelRequest) -> tuple[ModelBundle, Optional[zoo.ZooEntry]]:
    """Load, put in eval mode, check it runs on the example inputs, and wrap its output selection."""
    loaded = _load(request)
    module = set_eval(loaded.module)
    inputs = _example_inputs(request, loaded)
    with torch.no_grad():
        try:
            output = module(*inputs)
        except Exception as exc:  # the model's own error, whatever its type
            shapes = ", ".join("x".join(map(str, t.shape)) for t in inputs)
            raise UsageError(f"the model rejected input shape {shapes}: {type(exc).__name__}: {one_line(exc)}"
                             f" (set --input-shape to what the model takes)") from None
    selector = describe_output(output)
    if selector != "tensor":
        module = set_eval(OutputSelector(module, selector))
    params, macs = count_params_and_macs(module, inputs)
    if macs <= 0 and loaded.passes:
        macs = loaded.passes[-1].macs_after  # an unlifted .pt2 hides its layers from the counter; its record knows
    entry = loaded.zoo_entry
    provenance = Provenance(
        source=request.spec,
        kind=loaded.kind,
        model_name=loaded.name,
        output_taken=selector,
        params=params,
        macs=macs,
        input_shapes=tuple(tuple(t.shape) for t in inputs),
        passes=loaded.passes,
        preprocessing=dict(entry.preprocessing) if entry else {},
        labels=entry.labels if entry else (),
    )
    names = tuple("input" if len(inputs) == 1 else f"input_{i}" for i in range(len(inputs)))
    return ModelBundle(module, inputs, names, provenance), entry


def count_params_and_macs(module: nn.Module, inputs: tuple[torch.Tensor, ...]) -> tuple[int, int]:
    import torch_pruning as tp

    params = sum(p.numel() for p in module.parameters())
    try:
        macs, _ = tp.utils.count_ops_and_params(module, inputs[0] if len(inputs) == 1 else inputs)
    except Exception:  # the counter traces with hooks; a model it cannot trace still has a parameter count
        macs = -1
    # -1: unknown (the counter hooks nn layers; an unlifted .pt2 calls aten ops directly and counts 0)
    return int(params), int(macs) if macs > 0 else -1


def _example_inputs(request: ModelRequest, loaded: _Loaded) -> tuple[torch.Tensor, ...]:
    if request.input_shape:
        torch.manual_seed(0)
        return (torch.randn(*request.input_shape),)
    if loaded.example_inputs:
        return loaded.example_inputs
    if loaded.zoo_entry:
        torch.manual_seed(0)
        return (torch.randn(*loaded.zoo_entry.input_shape),)
    raise UsageError(f"{request.spec}: cannot tell the model's input shape; pass --input-shape (e.g. 1x3x224x224) "
                     f"or return (model, example_inputs) from the callable")


def _load(request: ModelRequest) -> _Loaded:
    spec = request.spec
    if spec.startswith("zoo:"):
        name = spec[4:]
        entry = zoo.entry(name)
        return _Loaded(zoo.build(name), None, "zoo", name, entry)
    if spec.endswith(".pt2"):
        return _load_pt2(Path(spec))
    if spec.endswith((".pt", ".pth")):
        return _load_checkpoint(request)
    module, example = _from_callable(spec, "--model")
    return _Loaded(module, example, "python", _callable_name(spec))


def _callable_name(spec: str) -> str:
    target, _, attr = spec.rpartition(":")
    stem = Path(target).stem if target.endswith(".py") else target.rsplit(".", 1)[-1]
    return f"{stem}-{attr}" if attr not in ("build", "model", "get_model", "create_model") else stem


def resolve_callable(spec: str, option: str) -> Callable[..., Any]:
    """`file.py:name` or `package.module:name` -> the callable, with one-line errors."""
    if ":" not in spec:
        raise UsageError(f"{option} {spec!r}: expected zoo:NAME, path/to/file.py:callable, package.module:callable, "
                         f"a .pt2 file, or a .pt checkpoint")
    target, _, attr = spec.rpartition(":")
    if target.endswith(".py"):
        path = Path(target)
        if not path.is_file():
            raise UsageError(f"{option} {spec}: model file {target} does not exist")
        mod_name = f"edgepack_user_{path.stem}"
        module_spec = importlib.util.spec_from_file_location(mod_name, path)
        module = importlib.util.module_from_spec(module_spec)  # type: ignore[arg-type]
        sys.modules[mod_name] = module
        try:
            module_spec.loader.exec_module(module)  # type: ignore[union-attr]
        except Exception as exc:
            raise UsageError(f"{option} {spec}: importing {target} failed: {type(exc).__name__}: {one_line(exc)}") from None
    else:
        try:
            module = importlib.import_module(target)
        except ImportError as exc:
            raise UsageError(f"{option} {spec}: cannot import module {target!r} ({one_line(exc)})") from None
    if not hasattr(module, attr):
        defined = sorted(n for n, v in vars(module).items() if callable(v) and not n.startswith("_")
                         and getattr(v, "__module__", None) == module.__name__)
        raise UsageError(f"{option} {spec}: {target} defines no {attr!r}; it defines: {', '.join(defined) or 'nothing callable'}")
    fn = getattr(module, attr)
    if not callable(fn):
        raise UsageError(f"{option} {spec}: {attr!r} is a {type(fn).__name__}, not a callable")
    return fn


def _from_callable(spec: str, option: str) -> tuple[nn.Module, Optional[tuple[torch.Tensor, ...]]]:
    fn = resolve_callable(spec, option)
    try:
        result = fn() if not isinstance(fn, nn.Module) else fn
    except Exception as exc:
        raise UsageError(f"{option} {spec}: calling it failed: {type(exc).__name__}: {one_line(exc)}") from None
    example = None
    if isinstance(result, tuple) and len(result) == 2 and isinstance(result[0], nn.Module):
        result, example = result
        example = (example,) if isinstance(example, torch.Tensor) else tuple(example)
        if not all(isinstance(t, torch.Tensor) for t in example):
            raise UsageError(f"{option} {spec}: example inputs must be tensors")
    if not isinstance(result, nn.Module):
        raise UsageError(f"{option} {spec}: returned {type(result).__name__}, not a torch.nn.Module "
                         f"(return a Module, or (Module, example_inputs))")
    return result, example


def _load_pt2(path: Path) -> _Loaded:
    if not path.is_file():
        raise UsageError(f"--model {path}: no such .pt2 file")
    try:
        ep = torch.export.load(str(path))
    except Exception as exc:
        raise UsageError(f"--model {path}: not a torch.export program ({one_line(exc)})") from None
    args = tuple(a for a in ep.example_inputs[0] if isinstance(a, torch.Tensor)) if ep.example_inputs else None
    history = _compress_history(path)
    entry = None
    if history is not None and history.source.startswith("zoo:"):
        entry = zoo.entry(history.source[4:])  # a compressed zoo model keeps its dataset, preprocessing and labels
    return _Loaded(ep.module(), args or None, "pt2", path.stem, entry, history.passes if history else ())


def _compress_history(path: Path) -> Optional[Provenance]:
    """The provenance `edgepack compress` wrote beside a .pt2, if any."""
    import json

    sidecar = path.with_suffix(".json")
    if not sidecar.is_file():
        return None
    try:
        return Provenance.from_dict(json.loads(sidecar.read_text(encoding="utf-8")))
    except (ValueError, TypeError, KeyError):
        return None


def _load_checkpoint(request: ModelRequest) -> _Loaded:
    path = Path(request.spec)
    if not path.is_file():
        raise UsageError(f"--model {path}: no such checkpoint file")
    if request.trust_checkpoint:
        obj = torch.load(path, map_location="cpu", weights_only=False)
        if not isinstance(obj, nn.Module):
            raise UsageError(f"--model {path}: holds a {type(obj).__name__}, not a whole Module; "
                             f"load it as a state dict with --factory SPEC instead")
        return _Loaded(obj, None, "checkpoint", path.stem)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        if "weights_only" in str(exc) or "Unsupported global" in str(exc):
            raise UsageError(f"--model {path}: the checkpoint needs unpickling arbitrary objects; if you trust it, "
                             f"add --trust-checkpoint, or save a state_dict and pass --factory") from None
        raise UsageError(f"--model {path}: cannot read checkpoint ({one_line(exc)})") from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not request.factory:
        raise UsageError(f"--model {path}: a state-dict checkpoint needs --factory file.py:callable "
                         f"that builds the architecture")
    module, example = _from_callable(request.factory, "--factory")
    try:
        module.load_state_dict(state)
    except RuntimeError as exc:
        raise UsageError(f"--model {path}: weights do not fit the --factory model ({one_line(exc)})") from None
    return _Loaded(module, example, "checkpoint", path.stem)
