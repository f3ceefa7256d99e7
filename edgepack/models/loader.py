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
from typing import Any, Callable, Mapping, Optional, Sequence

import torch
from torch import nn

from edgepack.errors import UsageError, one_line
from edgepack.models import zoo
from edgepack.models.bundle import ModelBundle
from edgepack.models.inputs import (SINGLE_INPUT_NAME, bind_example, example_from_specs, input_domains,
                                    synthetic_example)
from edgepack.models.outputs import OutputSelector, describe_output, select
from edgepack.models.request import (InputSpec, ModelRequest, check_callable_spec,
                                     check_input_shape, check_model_request, input_specs_text, spec_kind)
from edgepack.records import ModelInput, PassRecord, Provenance
from edgepack.tasks import infer_task
from edgepack.training import set_eval


@dataclass(frozen=True)
class _Loaded:
    module: nn.Module
    example: Any  # what came with the module: a tensor, a tuple of tensors, a dict by parameter name, or None
    kind: str
    name: str
    zoo_entry: Optional[zoo.ZooEntry] = None
    passes: tuple[PassRecord, ...] = ()  # compression already applied (a .pt2 from `edgepack compress`)
    warnings: tuple[str, ...] = ()  # what loading went on without (an unreadable sidecar), for the report
    original_source: str = ""  # the uncompressed model a .pt2's passes started from, and its input shape(s)
    original_input_shape: tuple[int, ...] = ()
    original_inputs: str = ""
    known_inputs: tuple[ModelInput, ...] = ()  # input domains a .pt2's history recorded


def load_model(request: ModelRequest) -> tuple[ModelBundle, Optional[zoo.ZooEntry]]:
    """Load, put in eval mode, bind its example inputs, find what each input accepts, check it runs on them, and
    wrap its output selection."""
    check_model_request(request)  # the model-free checks, again for callers that did not plan
    loaded = _load(request)
    module, inputs, names, real_values = _bind_inputs(request, loaded, set_eval(loaded.module))
    module = set_eval(module)
    domains = input_domains(module, inputs, names, loaded.known_inputs, values_are_real=real_values)
    if not real_values:
        inputs = synthetic_example(domains)  # placeholders replaced by values each input accepts
    with torch.no_grad():
        try:
            output = module(*inputs)
        except (Exception, SystemExit) as exc:  # the model's own error, whatever its type
            raise UsageError(f"the model rejected input shape {_shapes_text(names, inputs)}: {_describe(exc)}"
                             f" (set --input-shape to what the model takes)") from None
    selector = describe_output(output)
    if selector != "tensor":
        module = set_eval(OutputSelector(module, selector))
    task, task_how = infer_task(tuple(select(output, selector).shape), request.task)
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
        original_source=loaded.original_source,
        original_input_shape=loaded.original_input_shape,
        inputs=domains,
        original_inputs=loaded.original_inputs,
        task=task,
        task_how=task_how,
    )
    return ModelBundle(module, inputs, names, provenance, load_warnings=loaded.warnings), entry


def _bind_inputs(request: ModelRequest, loaded: _Loaded, module: nn.Module) -> tuple[
        nn.Module, tuple[torch.Tensor, ...], tuple[str, ...], bool]:
    """(module taking positional inputs, example inputs, their names, whether the example's values are real)."""
    where = f"--model {request.spec}"
    if request.inputs:
        return (*example_from_specs(module, request.inputs, where), False)
    if loaded.example is not None:
        if loaded.kind == "pt2" and len(loaded.known_inputs) == len(loaded.example):
            return module, tuple(loaded.example), tuple(d.name for d in loaded.known_inputs), True
        return (*bind_example(module, loaded.example, where), True)
    if loaded.zoo_entry:
        shape = loaded.zoo_entry.input_shape
        check_input_shape(shape)
        torch.manual_seed(0)
        return module, (torch.randn(*shape),), (SINGLE_INPUT_NAME,), True
    raise UsageError(f"{where}: cannot tell the model's input shape; pass --input-shape (e.g. 1x3x224x224, or "
                     f"input_ids=1x128:int64,attention_mask=1x128:int64) or return (model, example_inputs) from "
                     f"the callable")


def _shapes_text(names: Sequence[str], inputs: Sequence[torch.Tensor]) -> str:
    """"1x3x8x8", or "input_ids=1x16:int64, attention_mask=1x16:int64" for several inputs, as --input-shape reads."""
    named = len(inputs) > 1
    return ", ".join(InputSpec(name if named else None, tuple(t.shape), str(t.dtype).replace("torch.", "")).text()
                     for name, t in zip(names, inputs))


def count_params_and_macs(module: nn.Module, inputs: tuple[torch.Tensor, ...]) -> tuple[int, int]:
    import torch_pruning as tp

    params = sum(p.numel() for p in module.parameters())
    try:
        macs, _ = tp.utils.count_ops_and_params(module, inputs[0] if len(inputs) == 1 else inputs)
    except Exception:  # the counter traces with hooks; a model it cannot trace still has a parameter count
        macs = -1
    # -1: unknown (the counter hooks nn layers; an unlifted .pt2 calls aten ops directly and counts 0)
    return int(params), int(macs) if macs > 0 else -1


def _describe(exc: BaseException) -> str:
    """"TypeName: first line of the message", shortened by one_line."""
    if isinstance(exc, SystemExit):
        return f"it called sys.exit({exc.code!r})"
    return f"{type(exc).__name__}: {one_line(exc)}"


def _load(request: ModelRequest) -> _Loaded:
    spec = request.spec
    kind = spec_kind(spec)
    if kind == "zoo":
        name = spec[4:]
        entry = zoo.entry(name)
        return _Loaded(zoo.build(name), None, "zoo", name, entry)
    if kind == "pt2":
        return _load_pt2(Path(spec))
    if kind == "checkpoint":
        return _load_checkpoint(request)
    module, example = _from_callable(spec, "--model")
    return _Loaded(module, example, "python", _callable_name(spec))


def _callable_name(spec: str) -> str:
    target, _, attr = spec.rpartition(":")
    stem = Path(target).stem if target.endswith(".py") else target.rsplit(".", 1)[-1]
    return f"{stem}-{attr}" if attr not in ("build", "model", "get_model", "create_model") else stem


def resolve_callable(spec: str, option: str) -> Callable[..., Any]:
    """`file.py:name` or `package.module:name` -> the callable, with one-line errors."""
    check_callable_spec(spec, option)
    target, _, attr = spec.rpartition(":")
    if target.endswith(".py"):
        path = Path(target)
        mod_name = f"edgepack_user_{path.stem}"
        module_spec = importlib.util.spec_from_file_location(mod_name, path)
        if module_spec is None or module_spec.loader is None:
            raise UsageError(f"{option} {spec}: {target} cannot be imported as a Python file")
        module = importlib.util.module_from_spec(module_spec)
        sys.modules[mod_name] = module
        try:
            module_spec.loader.exec_module(module)
        except (Exception, SystemExit) as exc:  # whatever the user's file raises while it is imported
            sys.modules.pop(mod_name, None)
            raise UsageError(f"{option} {spec}: importing {target} failed: {_describe(exc)}") from None
    else:
        try:
            module = importlib.import_module(target)
        except ImportError as exc:
            raise UsageError(f"{option} {spec}: cannot import module {target!r} ({one_line(exc)})") from None
        except (Exception, SystemExit) as exc:  # the module was found but raised while it was imported
            raise UsageError(f"{option} {spec}: importing {target} failed: {_describe(exc)}") from None
    if not hasattr(module, attr):
        defined = sorted(n for n, v in vars(module).items() if callable(v) and not n.startswith("_")
                         and getattr(v, "__module__", None) == module.__name__)
        raise UsageError(f"{option} {spec}: {target} defines no {attr!r}; it defines: "
                         f"{', '.join(defined) or 'nothing callable'}")
    fn = getattr(module, attr)
    if not callable(fn):
        raise UsageError(f"{option} {spec}: {attr!r} is {_a(type(fn).__name__)}, not a callable; name a function "
                         f"or class that returns a torch.nn.Module")
    return fn


def _from_callable(spec: str, option: str) -> tuple[nn.Module, Any]:
    """The module a callable builds, and the example inputs it returned beside it (None when it returned none)."""
    fn = resolve_callable(spec, option)
    try:
        result = fn if isinstance(fn, nn.Module) else fn()
    except (Exception, SystemExit) as exc:
        raise UsageError(f"{option} {spec}: calling it failed: {_describe(exc)}") from None
    if isinstance(result, tuple) and len(result) == 2 and isinstance(result[0], nn.Module):
        if result[1] is None:
            raise UsageError(f"{option} {spec}: the example inputs it returned are None; return (module, tensor), "
                             f"(module, (tensor, ...)) or (module, {{'input_ids': tensor, ...}})")
        return result[0], result[1]
    if not isinstance(result, nn.Module):
        raise UsageError(f"{option} {spec}: returned {type(result).__name__}, not a torch.nn.Module "
                         f"(return a Module, or (Module, example_inputs))")
    return result, None


def _load_pt2(path: Path) -> _Loaded:
    if not _starts_like_zip(path):  # checked here so torch does not log a traceback for a file of another kind
        raise UsageError(f"--model {path}: not a torch.export program (torch.export.save writes a zip archive; "
                         f"this file is not one)")
    try:
        ep = torch.export.load(str(path))
        module = ep.module()
    except Exception as exc:
        raise UsageError(f"--model {path}: not a readable torch.export program ({_first_sentence(exc)}); "
                         f"write it with torch.export.save or `edgepack compress`") from None
    args = tuple(a for a in ep.example_inputs[0] if isinstance(a, torch.Tensor)) if ep.example_inputs else None
    history, warnings = _compress_history(path)
    entry = None
    # a chain of compress runs keeps naming the first, uncompressed model
    original = (history.original_source or history.source) if history else ""
    original_shape = ((history.original_input_shape or (history.input_shapes[0] if history.input_shapes else ()))
                      if history else ())
    if original.startswith("zoo:"):
        name = original[4:]
        if name in zoo.names():
            entry = zoo.entry(name)  # a compressed zoo model keeps its dataset, preprocessing and labels
        else:
            warnings.append(f"{path.with_suffix('.json')}: names zoo model {name!r}, which this edgepack does not "
                            f"have; the model loads without its dataset, preprocessing and labels")
    compressed = bool(history and history.passes)
    return _Loaded(module, args or None, "pt2", path.stem, entry, history.passes if history else (), tuple(warnings),
                   original if compressed else "", tuple(original_shape),
                   _original_inputs(history) if compressed and history else "",
                   history.inputs if history else ())


def _original_inputs(history: Provenance) -> str:
    """The --input-shape that re-loads the uncompressed original with the inputs it was loaded with."""
    if history.original_inputs:
        return history.original_inputs
    domains = history.inputs
    if len(domains) > 1:
        return input_specs_text([InputSpec(d.name, d.shape, d.dtype) for d in domains])
    if len(domains) == 1 and domains[0].dtype != "float32":
        return input_specs_text([InputSpec(None, domains[0].shape, domains[0].dtype)])
    return ""


def _compress_history(path: Path) -> tuple[Optional[Provenance], list[str]]:
    """The provenance `edgepack compress` wrote beside a .pt2, if any, and a warning when it cannot be read."""
    import json

    sidecar = path.with_suffix(".json")
    if not sidecar.is_file():
        return None, []
    try:
        return Provenance.from_dict(json.loads(sidecar.read_text(encoding="utf-8"))), []
    except Exception as exc:  # any way the file fails to be a provenance record: say so and go on without it
        return None, [f"{sidecar}: cannot read the pass history beside {path.name} ({type(exc).__name__}: "
                      f"{one_line(exc, 120)}); the model loads without it, so earlier passes and the zoo dataset "
                      f"are not carried over"]


def _load_checkpoint(request: ModelRequest) -> _Loaded:
    path = Path(request.spec)
    if request.trust_checkpoint:
        try:
            obj = torch.load(path, map_location="cpu", weights_only=False)
        except (Exception, SystemExit) as exc:  # unpickling runs the file's code: anything can come out
            raise UsageError(f"--model {path}: cannot unpickle the checkpoint "
                             f"({_checkpoint_failure(path, exc, trusted=True)})") from None
        if isinstance(obj, nn.Module):
            if request.factory:
                raise UsageError(f"--model {path}: holds a whole Module, so --factory is not used; drop --factory")
            return _Loaded(obj, None, "checkpoint", path.stem)
    else:
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:
            blocked = _unsupported_global(exc)
            if blocked:
                raise UsageError(f"--model {path}: the checkpoint holds {blocked}, which only unpickling arbitrary "
                                 f"code can load; if you trust the file, add --trust-checkpoint, or save a "
                                 f"state_dict and pass --factory") from None
            raise UsageError(f"--model {path}: cannot read the checkpoint ({_checkpoint_failure(path, exc)})"
                             ) from None
    state = _state_dict(obj, path)
    if not request.factory:
        raise UsageError(f"--model {path}: a state-dict checkpoint needs --factory file.py:callable "
                         f"that builds the architecture")
    module, example = _from_callable(request.factory, "--factory")
    _load_weights(module, state, path)
    return _Loaded(module, example, "checkpoint", path.stem)


def _unsupported_global(exc: Exception) -> Optional[str]:
    """The class or function a weights_only load refused (the one case --trust-checkpoint can help), if that was it."""
    text = str(exc)
    marker = "Unsupported global: GLOBAL "
    if marker not in text:
        return None
    return text.split(marker, 1)[1].split()[0]


def _checkpoint_failure(path: Path, exc: BaseException, trusted: bool = False) -> str:
    """Why torch.load failed, in a few words: torch's own messages run to paragraphs of advice."""
    if trusted and isinstance(exc, (AttributeError, ImportError)):  # pickles name classes by module and name
        return f"{_describe(exc)}; the classes it was pickled with must be importable here"
    if "TorchScript" in str(exc):
        return "it is a TorchScript archive; edgepack needs the Python model: pass file.py:callable, or its state " \
               "dict with --factory"
    with path.open("rb") as f:
        head = f.read(1)
    if _starts_like_zip(path) and ("zip archive" in str(exc) or isinstance(exc, OSError)):
        return f"its zip archive is damaged or truncated: {_first_sentence(exc)}; save or copy it again"
    if not _starts_like_zip(path) and head != b"\x80":  # torch.save writes a zip (or, before 1.6, a pickle)
        return "not a file torch.save wrote: neither a zip archive nor a pickle"
    text = str(exc)
    if "WeightsUnpickler error:" in text:
        return "corrupt or not a torch.save file: " + one_line(ValueError(text.split("WeightsUnpickler error:", 1)[1]))
    return f"corrupt or not a torch.save file: {type(exc).__name__}: {_first_sentence(exc)}"


def _starts_like_zip(path: Path) -> bool:
    """A zip's local header (a truncated zip still has one, so it is reported as corrupt, not as another format)."""
    with path.open("rb") as f:
        return f.read(4) == b"PK\x03\x04"


def _first_sentence(exc: BaseException) -> str:
    line = one_line(exc)
    sentence, dot, _ = line.partition(". ")
    return sentence if dot and len(sentence) >= 20 else line


def _state_dict(obj: Any, path: Path) -> Mapping[str, torch.Tensor]:
    """A state dict (parameter name -> tensor), unwrapped from {"state_dict": ...}; else one line saying why not."""
    if isinstance(obj, Mapping) and isinstance(obj.get("state_dict"), Mapping):
        obj = obj["state_dict"]
    if not isinstance(obj, Mapping):
        raise UsageError(f"--model {path}: holds {_a(type(obj).__name__)}, not a state dict (parameter names -> "
                         f"tensors) or a whole Module; save model.state_dict() and pass --factory file.py:callable")
    not_tensors = [k for k, v in obj.items() if not isinstance(v, torch.Tensor)]
    if not_tensors:
        first = not_tensors[0]
        raise UsageError(f"--model {path}: holds a dict that is not a state dict: {str(first)!r} is "
                         f"{_a(type(obj[first]).__name__)}, not a tensor (keys: {_some(list(obj))}); save "
                         f"model.state_dict() itself, or one under the key 'state_dict'")
    return obj


def _load_weights(module: nn.Module, state: Mapping[str, torch.Tensor], path: Path) -> None:
    """load_state_dict (torch decides what fits), with a refusal summarised in one line instead of torch's listing."""
    try:
        module.load_state_dict(state)
    except Exception as exc:
        raise UsageError(f"--model {path}: weights do not fit the --factory model: "
                         f"{_weights_mismatch(module, state) or one_line(exc)}") from None


def _weights_mismatch(module: nn.Module, state: Mapping[str, torch.Tensor]) -> str:
    expected = module.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    resized = [f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}" for k, v in expected.items()
               if k in state and tuple(state[k].shape) != tuple(v.shape)]
    problems = [f"{len(missing)} missing ({_some(missing)})" if missing else "",
                f"{len(unexpected)} unexpected ({_some(unexpected)})" if unexpected else "",
                f"{len(resized)} of another shape (checkpoint vs model: {_some(resized, 2)})" if resized else ""]
    return "; ".join(p for p in problems if p)


def _a(noun: str) -> str:
    return f"{'an' if noun[:1].lower() in 'aeiou' else 'a'} {noun}"


def _some(names: list[str], shown: int = 3) -> str:
    names = [str(n) for n in names]
    more = f", … {len(names) - shown} more" if len(names) > shown else ""
    return ", ".join(names[:shown]) + more
