"""What the user asked to load (`--model` and its companions): a plain record, so planning needs no torch.

`check_model_request` refuses what is wrong without loading anything (a missing file, a spec of no known form,
options that do not go together, an input shape too large to allocate), so the plan fails in milliseconds.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

from edgepack.errors import UsageError
from edgepack.tasks import TASKS

SPEC_FORMS = "zoo:NAME, path/to/file.py:callable, package.module:callable, a .pt2 file, or a .pt/.pth checkpoint"
CHECKPOINT_SUFFIXES = (".pt", ".pth")
INPUT_DTYPES = {"float32": 4, "int64": 8, "int32": 4, "bool": 1}  # what --input-shape may declare, with item sizes
MAX_EXAMPLE_INPUT_BYTES = 2 * 1024**3  # one example input; calibration and parity hold hundreds of them
INPUT_SHAPE_FORMS = "1x3x224x224, 1x128:int64, or input_ids=1x128:int64,attention_mask=1x128:int64"


@dataclass(frozen=True)
class InputSpec:
    """One input as `--input-shape` declares it: a forward parameter's name (None: by position), shape, dtype."""

    name: Optional[str]
    shape: tuple[int, ...]
    dtype: str = "float32"

    def text(self) -> str:
        shape = "x".join(map(str, self.shape)) + ("" if self.dtype == "float32" else f":{self.dtype}")
        return f"{self.name}={shape}" if self.name else shape


@dataclass(frozen=True)
class ModelRequest:
    spec: str  # zoo:NAME, file.py:callable, package.module:callable, a .pt2, or a checkpoint .pt with a factory
    inputs: tuple[InputSpec, ...] = ()  # from --input-shape; empty: the model, its factory or the zoo says
    factory: Optional[str] = None
    trust_checkpoint: bool = False
    task: str = "auto"  # classification | regression | segmentation | embedding; auto: from the output's shape


def parse_input_specs(text: str, option: str = "--input-shape") -> tuple[InputSpec, ...]:
    """"1x3x224x224", "1x128:int64", "input_ids=1x128:int64,attention_mask=1x128:int64" -> InputSpecs.

    Several inputs are separated by commas; each may be named after the forward parameter it fills (all or none).
    The older "1,3,224,224" spelling of one shape is still read.
    """
    stripped = text.strip()
    if re.fullmatch(r"\d+(\s*,\s*\d+)+", stripped):  # "1,3,224,224": one shape, comma-separated
        stripped = "x".join(p.strip() for p in stripped.split(","))
    parts = [p.strip() for p in stripped.split(",")]
    if not stripped or any(not p for p in parts):
        raise UsageError(f"{option} {text!r} is empty or has an empty part; write it like {INPUT_SHAPE_FORMS}")
    specs = tuple(_parse_one(part, text, option) for part in parts)
    named = [s.name is not None for s in specs]
    if any(named) and not all(named):
        raise UsageError(f"{option} {text!r}: name every input or none (e.g. {INPUT_SHAPE_FORMS.split(', or ')[-1]})")
    names = [s.name for s in specs if s.name]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise UsageError(f"{option} {text!r}: input {repeated[0]!r} is given twice")
    for spec in specs:
        if 0 in spec.shape:
            raise UsageError(f"{option} {text!r}: every dimension must be 1 or more, e.g. 1x3x224x224")
        check_input_shape(spec.shape, option, spec.dtype)
    return specs


def _parse_one(part: str, text: str, option: str) -> InputSpec:
    name, eq, rest = part.partition("=")
    if not eq:
        name, rest = "", part
    name = name.strip()
    if eq and not name.isidentifier():
        raise UsageError(f"{option} {text!r}: {name!r} is not a parameter name; write name=1x128:int64")
    shape_text, colon, dtype = rest.strip().partition(":")
    dtype = dtype.strip().lower() if colon else "float32"
    if dtype not in INPUT_DTYPES:
        raise UsageError(f"{option} {text!r}: dtype {dtype!r} is not one of {', '.join(INPUT_DTYPES)}")
    dims = [d for d in re.split(r"[x\s]+", shape_text.strip().lower()) if d]
    if not dims or not all(d.isdigit() for d in dims):
        raise UsageError(f"{option} {text!r}: {shape_text.strip() or '(nothing)'!r} is not a shape; write it like "
                         f"{INPUT_SHAPE_FORMS}")
    return InputSpec(name or None, tuple(int(d) for d in dims), dtype)


def input_specs_text(specs: Sequence[InputSpec]) -> str:
    """The --input-shape text that parses back to `specs`."""
    return ",".join(s.text() for s in specs)


def spec_kind(spec: str) -> str:
    """"zoo", "pt2", "checkpoint" or "callable": how a spec is loaded."""
    if spec.startswith("zoo:"):
        return "zoo"
    if spec.lower().endswith(".pt2"):
        return "pt2"
    if spec.lower().endswith(CHECKPOINT_SUFFIXES):
        return "checkpoint"
    return "callable"


def check_model_request(request: ModelRequest, option: str = "--model") -> None:
    """Every check on a model request that needs neither torch nor the model. Raises UsageError (exit 2)."""
    spec = request.spec
    if not spec.strip():
        raise UsageError(f"{option} is empty; give {SPEC_FORMS}")
    kind = spec_kind(spec)
    if kind == "zoo":
        from edgepack.models import zoo

        zoo.entry(spec[4:])  # an unknown name lists the zoo
    elif kind in ("pt2", "checkpoint"):
        _check_file(Path(spec), option, ".pt2" if kind == "pt2" else "checkpoint")
    else:
        check_callable_spec(spec, option)
    if kind != "checkpoint":
        # these only mean something for a checkpoint; ignoring them would hide a mistaken --model
        if request.factory is not None:
            raise UsageError(f"--factory builds the architecture for a .pt/.pth state-dict checkpoint; {option} "
                             f"{spec} is not one: drop --factory, or pass the checkpoint as {option}")
        if request.trust_checkpoint:
            raise UsageError(f"--trust-checkpoint unpickles a .pt/.pth checkpoint; {option} {spec} is not one: "
                             f"drop --trust-checkpoint")
    elif request.factory is not None:
        check_callable_spec(request.factory, "--factory")
    for input_spec in request.inputs:
        check_input_shape(input_spec.shape, dtype=input_spec.dtype)
    if request.task not in ("auto", *TASKS):
        raise UsageError(f"--task {request.task!r} is not one of auto, {', '.join(TASKS)}")


def check_callable_spec(spec: str, option: str) -> None:
    """`file.py:callable` or `package.module:callable`, with the file present when it is a file."""
    target, colon, attr = spec.rpartition(":")
    if not colon or not target or not attr:
        hint = f" (add the callable: {spec}:build)" if spec.endswith(".py") else ""
        raise UsageError(f"{option} {spec!r}: expected {SPEC_FORMS}{hint}")
    if target.endswith(".py"):
        path = Path(target)
        if not path.exists():
            raise UsageError(f"{option} {spec}: model file {target} does not exist")
        if not path.is_file():
            raise UsageError(f"{option} {spec}: {target} is not a file; name a Python file and a callable in it")


def check_input_shape(shape: Sequence[int], option: str = "--input-shape", dtype: str = "float32") -> None:
    """Refuse an example input too large to allocate, before anything tries (the size is known from the shape)."""
    text = "x".join(str(d) for d in shape)
    if not shape or any(d < 1 for d in shape):
        raise UsageError(f"{option} {text or '(empty)'}: every dimension must be 1 or more, e.g. 1x3x224x224")
    values = math.prod(shape)
    nbytes = values * INPUT_DTYPES.get(dtype, 4)
    if nbytes > MAX_EXAMPLE_INPUT_BYTES:
        raise UsageError(f"{option} {text} is {values:,} values ({format_bytes(nbytes)} as {dtype}), over the "
                         f"{format_bytes(MAX_EXAMPLE_INPUT_BYTES)} edgepack allows for one example input; give the "
                         f"shape of one real input, batch included, e.g. 1x3x224x224")


def format_bytes(nbytes: float) -> str:
    units = ("B", "KiB", "MiB", "GiB", "TiB", "PiB")
    power = 0
    while nbytes >= 1024 and power < len(units) - 1:
        nbytes /= 1024
        power += 1
    return f"{nbytes:.0f} B" if power == 0 else f"{nbytes:,.1f} {units[power]}"


def _check_file(path: Path, option: str, what: str) -> None:
    if not path.exists():
        raise UsageError(f"{option} {path}: no such {what} file")
    if not path.is_file():
        raise UsageError(f"{option} {path}: is a directory, not a {what} file")
    if not os.access(path, os.R_OK):
        raise UsageError(f"{option} {path}: the file is not readable (permission denied)")
    if path.stat().st_size == 0:
        raise UsageError(f"{option} {path}: the file is empty (0 bytes), not a {what} file; save the model again")
