"""A model's inputs: binding example inputs (a tensor, a tuple, or a dict keyed by forward's parameters) to
positional ones every exporter takes, and finding what values each input accepts (token ids below the size of the
embedding that reads them, masks of ones, real-valued features), so synthetic data and data-file checks feed the
model what it can take.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping, Sequence
from typing import Any, Optional

import torch
from torch import nn

from edgepack.errors import UsageError
from edgepack.models.request import InputSpec
from edgepack.records import EMBEDDING_IDS, ModelInput

SINGLE_INPUT_NAME = "input"  # what a one-tensor model's input is called in every artifact


class KeywordForward(nn.Module):
    """Calls the model with its inputs as keyword arguments: exporters and runtimes pass inputs by position, while a
    Hugging Face model's forward takes input_ids and attention_mask among a dozen optional parameters."""

    def __init__(self, model: nn.Module, names: Sequence[str]) -> None:
        super().__init__()
        self.model = model
        self.names = tuple(names)

    def forward(self, *args: torch.Tensor) -> Any:
        return self.model(**dict(zip(self.names, args)))


def forward_parameters(module: nn.Module) -> Optional[list[str]]:
    """The names forward takes one tensor each by (self excluded); None when it takes **kwargs or cannot be read."""
    try:
        params = inspect.signature(module.forward).parameters.values()
    except (TypeError, ValueError):
        return None
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        return None
    return [p.name for p in params if p.kind in (inspect.Parameter.POSITIONAL_ONLY,
                                                 inspect.Parameter.POSITIONAL_OR_KEYWORD,
                                                 inspect.Parameter.KEYWORD_ONLY)]


def bind_example(module: nn.Module, example: Any, where: str) -> tuple[nn.Module, tuple[torch.Tensor, ...],
                                                                        tuple[str, ...]]:
    """(module taking positional inputs, the example tensors, their names) from what a factory returned beside its
    module: a tensor, a tuple/list of tensors, or a dict of tensors keyed by forward's parameter names."""
    if isinstance(example, torch.Tensor):
        return module, (example,), (SINGLE_INPUT_NAME,)
    if isinstance(example, Mapping):
        if not example or not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in example.items()):
            raise UsageError(f"{where}: the example inputs dict must map forward parameter names to tensors "
                             f"(got {_describe_mapping(example)})")
        return _keyword_bound(module, dict(example), where, "the example inputs dict")
    if isinstance(example, (tuple, list)) and example and all(isinstance(t, torch.Tensor) for t in example):
        inputs = tuple(example)
        return module, inputs, positional_names(module, len(inputs))
    if isinstance(example, (tuple, list)) and not example:
        got = f"an empty {type(example).__name__}"
    elif isinstance(example, (tuple, list)):
        got = f"a {type(example).__name__} of {', '.join(type(t).__name__ for t in example)}"
    else:
        shown = repr(example)
        got = f"{type(example).__name__} {shown}" if len(shown) <= 40 else f"a {type(example).__name__}"
    raise UsageError(f"{where}: the example inputs it returned are {got}; return (module, tensor), (module, (tensor, "
                     f"...)) with one tensor per forward argument, or (module, {{'input_ids': tensor, ...}})")


def positional_names(module: nn.Module, count: int) -> tuple[str, ...]:
    """Names for inputs passed by position: "input" for one, else forward's own parameter names where it has them."""
    if count == 1:
        return (SINGLE_INPUT_NAME,)
    params = forward_parameters(module) or []
    if len(params) >= count:
        return tuple(params[:count])
    return tuple(f"input_{i}" for i in range(count))


def example_from_specs(module: nn.Module, specs: Sequence[InputSpec], where: str) -> tuple[
        nn.Module, tuple[torch.Tensor, ...], tuple[str, ...]]:
    """Placeholder example inputs for `--input-shape`: float N(0,1), integer zeros (a valid id for any table),
    masks and bools of ones. `synthetic_example` replaces them once each input's valid range is known."""
    torch.manual_seed(0)
    tensors = {}
    for i, spec in enumerate(specs):
        name = spec.name or f"input_{i}"
        try:
            tensors[name] = _placeholder(spec, name)
        except (RuntimeError, MemoryError) as exc:  # within the limit but more than this machine has free
            raise UsageError(f"--input-shape {spec.text()}: cannot allocate the example input ({exc}); give the "
                             f"shape of one real input, batch included") from None
    if all(s.name for s in specs):
        return _keyword_bound(module, tensors, where, "--input-shape")
    inputs = tuple(tensors.values())
    return module, inputs, positional_names(module, len(inputs))


def _placeholder(spec: InputSpec, name: str) -> torch.Tensor:
    dtype = getattr(torch, spec.dtype)
    if spec.dtype == "float32":
        return torch.randn(*spec.shape)
    if spec.dtype == "bool" or _looks_like_mask(name):
        return torch.ones(*spec.shape, dtype=dtype)
    return torch.zeros(*spec.shape, dtype=dtype)


def _keyword_bound(module: nn.Module, tensors: dict[str, torch.Tensor], where: str, what: str) -> tuple[
        nn.Module, tuple[torch.Tensor, ...], tuple[str, ...]]:
    params = forward_parameters(module)
    if params is not None:
        unknown = [k for k in tensors if k not in params]
        if unknown:
            shown = ", ".join(params[:12]) + (", …" if len(params) > 12 else "")
            raise UsageError(f"{where}: {what} names {unknown[0]!r}, which is not a parameter of the model's forward "
                             f"(it takes: {shown})")
        order = sorted(tensors, key=params.index)  # forward's own order, whatever order the dict was written in
    else:
        order = list(tensors)
    return KeywordForward(module, order), tuple(tensors[k] for k in order), tuple(order)


def _describe_mapping(example: Mapping[Any, Any]) -> str:
    if not example:
        return "an empty dict"
    key, value = next((k, v) for k, v in example.items()
                      if not (isinstance(k, str) and isinstance(v, torch.Tensor)))
    return f"{key!r}: {type(value).__name__}"


def _looks_like_mask(name: str) -> bool:
    return "mask" in name.lower()


def input_domains(module: nn.Module, inputs: Sequence[torch.Tensor], names: Sequence[str],
                  known: Sequence[ModelInput] = (), values_are_real: bool = True) -> tuple[ModelInput, ...]:
    """What each input accepts. Float inputs are features; bool inputs and integer inputs named like masks take
    ones; other integer inputs are ids, valid below the size of the embedding table that reads them (found by
    watching which nn.Embedding receives the input), else within the example's own values when those are real.

    `known`: domains recorded earlier (a .pt2's history), used as they are for inputs of the same name and dtype.
    """
    by_name = {d.name: d for d in known}
    readers = _embedding_readers(module, inputs)
    domains = []
    for i, (name, x) in enumerate(zip(names, inputs)):
        shape, dtype = tuple(int(d) for d in x.shape), str(x.dtype).replace("torch.", "")
        earlier = by_name.get(name)
        if earlier is not None and earlier.dtype == dtype:
            domains.append(ModelInput(name, shape, dtype, earlier.kind, earlier.low, earlier.high, earlier.how))
        elif x.is_floating_point():
            domains.append(ModelInput(name, shape, dtype, "float"))
        elif dtype == "bool" or _looks_like_mask(name):
            domains.append(ModelInput(name, shape, dtype, "mask", 0, 2, "a mask"))
        elif i in readers:
            table, size = readers[i]
            domains.append(ModelInput(name, shape, dtype, "index", 0, size, f"{EMBEDDING_IDS} {table}"))
        elif values_are_real and x.numel():
            low, high = int(x.min()), int(x.max()) + 1
            domains.append(ModelInput(name, shape, dtype, "index", low, high,
                                      "within the example input's values; no embedding reads it directly"))
        else:
            domains.append(ModelInput(name, shape, dtype, "index", 0, 1,
                                      "zeros: no embedding reads it directly, so no wider range is known"))
    return tuple(domains)


def _embedding_readers(module: nn.Module, inputs: Sequence[torch.Tensor]) -> dict[int, tuple[str, int]]:
    """{input position: (embedding module name, its num_embeddings)} for integer inputs an nn.Embedding reads as
    they are, seen by running the model once with forward pre-hooks."""
    candidates = {i: x for i, x in enumerate(inputs) if not x.is_floating_point() and x.dtype != torch.bool}
    if not candidates:
        return {}
    found: dict[int, tuple[str, int]] = {}

    def watch(name: str, size: int) -> Any:
        def hook(_module: nn.Module, args: tuple[Any, ...]) -> None:
            ids = args[0] if args else None
            for i, x in candidates.items():
                if i not in found and ids is x:
                    found[i] = (name, size)
        return hook

    wrapped = isinstance(module, KeywordForward)  # name the user's own module, not edgepack's wrapper
    handles = [m.register_forward_pre_hook(watch(n.removeprefix("model.") if wrapped else n, m.num_embeddings))
               for n, m in module.named_modules() if isinstance(m, (nn.Embedding, nn.EmbeddingBag))]
    if not handles:
        return {}
    try:
        with torch.no_grad():
            module(*inputs)
    except Exception:  # noqa: BLE001 - the caller runs the model again and reports its error in full
        return {}
    finally:
        for handle in handles:
            handle.remove()
    return found


def synthetic_example(domains: Sequence[ModelInput], seed: int = 0) -> tuple[torch.Tensor, ...]:
    """Example inputs drawn within each input's domain (what export traces and the model is checked with)."""
    generator = torch.Generator().manual_seed(seed)
    tensors = []
    for d in domains:
        dtype = getattr(torch, d.dtype)
        if d.kind == "float":
            tensors.append(torch.randn(*d.shape, generator=generator).to(dtype))
        elif d.kind == "mask":
            tensors.append(torch.ones(*d.shape, dtype=dtype))
        else:
            tensors.append(torch.randint(d.low, max(d.high, d.low + 1), d.shape, generator=generator, dtype=dtype))
    return tuple(tensors)
