"""Every bad input is exit 2 with one line on stderr naming what was wrong, and nothing written that looks complete.

One table: each case gives the command line, the files it needs (written into tmp_path), and a fragment the error
line must hold. Add a row for every class of bad input found; most fail before any export, so the table stays quick.
"""

from __future__ import annotations

import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from edgepack.cli import cli

BAD_MODELS = '''
import sys

import torch
from torch import nn

NUMBER = 42


class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.fc = nn.Linear(4 * 8 * 8, 10)

    def forward(self, x):
        return self.fc(torch.relu(self.conv(x)).flatten(1))


class Narrow(Tiny):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4 * 8 * 8, 5)


class ForwardRaises(Tiny):
    def forward(self, x):
        raise ValueError("this model refuses every input")


class ForwardNoTensor(Tiny):
    def forward(self, x):
        return "logits"


def build():
    return Tiny(), torch.randn(1, 1, 8, 8)


def build_flat():
    return nn.Linear(64, 10), torch.randn(1, 64)


def build_unsized():
    return Tiny()


def build_narrow():
    return Narrow(), torch.randn(1, 1, 8, 8)


def example_not_tensor():
    return Tiny(), 5


def example_list_with_int():
    return Tiny(), [torch.randn(1, 1, 8, 8), 5]


def example_empty():
    return Tiny(), ()


def raises():
    raise RuntimeError("weights server unreachable")


def exits():
    sys.exit(3)


def forward_raises():
    return ForwardRaises(), torch.randn(1, 1, 8, 8)


def forward_no_tensor():
    return ForwardNoTensor(), torch.randn(1, 1, 8, 8)
'''


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("bad_models") / "bad_models.py"
    path.write_text(textwrap.dedent(BAD_MODELS))
    return path


# ---- files the cases write ------------------------------------------------------------------------------------------

def _tiny_state_dict() -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    conv, fc = torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.Linear(4 * 8 * 8, 10)
    return {"conv.weight": conv.weight.data, "conv.bias": conv.bias.data, "fc.weight": fc.weight.data,
            "fc.bias": fc.bias.data}


def _write(name: str, data: bytes) -> Callable[[Path], None]:
    return lambda tmp: (tmp / name).write_bytes(data)


def _random_bytes(name: str) -> Callable[[Path], None]:
    return _write(name, np.random.default_rng(0).integers(0, 256, 2000, dtype=np.uint8).tobytes())


def _torch_file(name: str, obj: object) -> Callable[[Path], None]:
    return lambda tmp: torch.save(obj, tmp / name)


def _truncated_checkpoint(tmp: Path) -> None:
    torch.save(_tiny_state_dict(), tmp / "whole.pt")
    data = (tmp / "whole.pt").read_bytes()
    (tmp / "cut.pt").write_bytes(data[: len(data) // 2])


def _pickled_unimportable_class(tmp: Path) -> None:
    """A whole Module pickled from a module that no longer exists (renamed or deleted since it was saved)."""
    import sys
    import types

    module = types.ModuleType("edgepack_test_gone_module")
    module.Gone = type("Gone", (torch.nn.Linear,), {"__module__": module.__name__})
    sys.modules[module.__name__] = module
    try:
        torch.save(module.Gone(64, 10), tmp / "gone.pt")
    finally:
        del sys.modules[module.__name__]


def _truncated_pt2(tmp: Path) -> None:
    """A zip archive (as torch.export.save writes) cut short in a copy."""
    import zipfile

    with zipfile.ZipFile(tmp / "whole.pt2", "w") as archive:
        archive.writestr("archive_format", "pt2")
        archive.writestr("models/model.json", "{}" * 1000)
    data = (tmp / "whole.pt2").read_bytes()
    (tmp / "cut.pt2").write_bytes(data[: len(data) // 2])


def _truncated_png(tmp: Path) -> None:
    from PIL import Image

    (tmp / "images" / "a").mkdir(parents=True)
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64), dtype=np.uint8)).save(tmp / "full.png")
    data = (tmp / "full.png").read_bytes()
    (tmp / "images" / "a" / "0.png").write_bytes(data[: len(data) // 2])


def _saved_report(tmp: Path) -> None:
    from edgepack.records import Provenance, Report

    model = Provenance("zoo:digits-cnn", "zoo", "digits-cnn", "tensor", 10, 100, ((1, 1, 8, 8),))
    (tmp / "report.json").write_text(Report("0", "now", "x86-cpu", "out", model).to_json())


def _npz(name: str, **arrays: np.ndarray) -> Callable[[Path], None]:
    return lambda tmp: np.savez(tmp / name, **arrays)


def _npy_named_npz(tmp: Path) -> None:
    with open(tmp / "plain.npz", "wb") as f:
        np.save(f, np.zeros((4, 1, 8, 8), np.float32))


def _text_as_png(tmp: Path) -> None:
    for label in ("a", "b"):
        (tmp / "images" / label).mkdir(parents=True)
        (tmp / "images" / label / "0.png").write_text("not an image")


def _loose_images(tmp: Path) -> None:
    from PIL import Image

    (tmp / "images").mkdir()
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp / "images" / "0.png")


def _text_only_classes(tmp: Path) -> None:
    (tmp / "images" / "a").mkdir(parents=True)
    (tmp / "images" / "a" / "notes.txt").write_text("no images here")


def _mkdir(name: str) -> Callable[[Path], None]:
    return lambda tmp: (tmp / name).mkdir()


OK_X = np.zeros((4, 1, 8, 8), np.float32)


@dataclass(frozen=True)
class Case:
    id: str
    args: tuple[str, ...]  # "{tmp}": the case's directory, "{models}": the file of bad models above
    expected: str  # a fragment of the one error line
    files: Optional[Callable[[Path], None]] = None
    command: str = "build"


CASES = [
    # the model spec and what the callable returns
    Case("spec-without-colon", ("--model", "{models}"), "add the callable"),
    Case("spec-of-no-known-form", ("--model", "resnet"), "expected zoo:NAME"),
    Case("spec-empty", ("--model", ""), "--model is empty"),
    Case("spec-non-callable", ("--model", "{models}:NUMBER"), "'NUMBER' is an int, not a callable"),
    Case("spec-module-attribute-not-callable", ("--model", "os:sep"), "'sep' is a str, not a callable"),
    Case("model-file-syntax-error", ("--model", "{tmp}/broken.py:build"),
         "importing {tmp}/broken.py failed: SyntaxError", _write("broken.py", b"def build(:\n")),
    Case("model-file-missing", ("--model", "{tmp}/none.py:build"), "model file {tmp}/none.py does not exist"),
    Case("callable-raises", ("--model", "{models}:raises"), "calling it failed: RuntimeError: weights server"),
    Case("callable-exits", ("--model", "{models}:exits"), "calling it failed: it called sys.exit(3)"),
    Case("example-inputs-not-tensors", ("--model", "{models}:example_not_tensor"),
         "example inputs it returned are int 5"),
    Case("example-inputs-list-with-int", ("--model", "{models}:example_list_with_int"), "a list of Tensor, int"),
    Case("example-inputs-empty", ("--model", "{models}:example_empty"), "are an empty tuple"),
    Case("forward-raises", ("--model", "{models}:forward_raises"),
         "the model rejected input shape 1x1x8x8: ValueError: this model refuses every input"),
    Case("forward-returns-no-tensor", ("--model", "{models}:forward_no_tensor"), "returned str with no tensor"),
    Case("no-input-shape-known", ("--model", "{models}:build_unsized"), "pass --input-shape"),
    # checkpoints and programs
    Case("checkpoint-missing", ("--model", "{tmp}/none.pt"), "no such checkpoint file"),
    Case("checkpoint-is-directory", ("--model", "{tmp}/dir.pt"), "is a directory", _mkdir("dir.pt")),
    Case("checkpoint-empty", ("--model", "{tmp}/empty.pt"), "the file is empty", _write("empty.pt", b"")),
    Case("checkpoint-random-bytes", ("--model", "{tmp}/r.pt", "--factory", "{models}:build"),
         "neither a zip archive nor a pickle", _random_bytes("r.pt")),
    Case("checkpoint-random-bytes-trusted", ("--model", "{tmp}/r.pt", "--trust-checkpoint", "--input-shape",
                                             "1x1x8x8"), "neither a zip archive nor a pickle", _random_bytes("r.pt")),
    Case("checkpoint-truncated", ("--model", "{tmp}/cut.pt", "--factory", "{models}:build"),
         "its zip archive is damaged or truncated", _truncated_checkpoint),
    Case("checkpoint-whole-module-untrusted", ("--model", "{tmp}/m.pt", "--input-shape", "1x64"),
         "holds torch.nn.modules.linear.Linear, which only unpickling arbitrary code can load",
         _torch_file("m.pt", torch.nn.Linear(64, 10))),
    Case("checkpoint-whole-module-with-factory", ("--model", "{tmp}/m.pt", "--trust-checkpoint", "--factory",
                                                  "{models}:build"), "holds a whole Module, so --factory is not used",
         _torch_file("m.pt", torch.nn.Linear(64, 10))),
    Case("checkpoint-class-not-importable", ("--model", "{tmp}/gone.pt", "--trust-checkpoint", "--input-shape",
                                             "1x64"), "the classes it was pickled with must be importable",
         _pickled_unimportable_class),
    Case("checkpoint-bare-tensor", ("--model", "{tmp}/t.pt"), "holds a Tensor, not a state dict",
         _torch_file("t.pt", torch.zeros(3))),
    Case("checkpoint-bare-tensor-with-factory", ("--model", "{tmp}/t.pt", "--factory", "{models}:build"),
         "holds a Tensor, not a state dict", _torch_file("t.pt", torch.zeros(3))),
    Case("checkpoint-bare-tensor-trusted", ("--model", "{tmp}/t.pt", "--trust-checkpoint", "--input-shape",
                                            "1x1x8x8"), "holds a Tensor, not a state dict",
         _torch_file("t.pt", torch.zeros(3))),
    Case("checkpoint-training-dict", ("--model", "{tmp}/c.pt", "--factory", "{models}:build"),
         "'epoch' is an int, not a tensor", _torch_file("c.pt", {"epoch": 3, "model": _tiny_state_dict()})),
    Case("checkpoint-weights-do-not-fit", ("--model", "{tmp}/sd.pt", "--factory", "{models}:build_narrow"),
         "of another shape (checkpoint vs model: fc.weight (10, 256) vs (5, 256)",
         _torch_file("sd.pt", _tiny_state_dict())),
    Case("factory-without-colon", ("--model", "{tmp}/sd.pt", "--factory", "{models}"), "--factory '{models}': expected",
         _torch_file("sd.pt", _tiny_state_dict())),
    Case("factory-without-checkpoint", ("--model", "zoo:digits-cnn", "--factory", "{models}:build"),
         "--factory builds the architecture for a .pt/.pth state-dict checkpoint"),
    Case("trust-without-checkpoint", ("--model", "zoo:digits-cnn", "--trust-checkpoint"),
         "--trust-checkpoint unpickles a .pt/.pth checkpoint"),
    Case("pt2-random-bytes", ("--model", "{tmp}/r.pt2"), "not a torch.export program", _random_bytes("r.pt2")),
    Case("pt2-empty", ("--model", "{tmp}/e.pt2"), "the file is empty", _write("e.pt2", b"")),
    Case("pt2-missing", ("--model", "{tmp}/none.pt2"), "no such .pt2 file"),
    Case("pt2-truncated", ("--model", "{tmp}/cut.pt2"), "not a readable torch.export program", _truncated_pt2),
    Case("pt2-is-a-checkpoint", ("--model", "{tmp}/sd.pt2"), "not a readable torch.export program",
         _torch_file("sd.pt2", _tiny_state_dict())),
    # input shapes
    Case("runtime-auto-with-others", ("--model", "zoo:digits-cnn", "--runtime", "auto,onnxruntime"),
         "cannot use runtime 'auto'; it lists: onnxruntime, executorch, litert, openvino (or 'all', or 'auto' alone)"),
    Case("input-shape-dtype-unknown", ("--model", "zoo:digits-cnn", "--input-shape", "1x1x8x8:float64"),
         "dtype 'float64' is not one of float32, int64, int32, bool"),
    Case("input-shape-zero", ("--model", "zoo:digits-cnn", "--input-shape", "0x3"), "--input-shape '0x3'"),
    Case("input-shape-negative", ("--model", "zoo:digits-cnn", "--input-shape", "1x-3"), "--input-shape '1x-3'"),
    Case("input-shape-words", ("--model", "zoo:digits-cnn", "--input-shape", "abc"), "write it like 1x3x224x224"),
    Case("input-shape-empty", ("--model", "zoo:digits-cnn", "--input-shape", ""), "--input-shape ''"),
    Case("input-shape-too-big", ("--model", "zoo:digits-cnn", "--input-shape", "100000x100000x100x100"),
         "(363.8 TiB as float32), over the 2.0 GiB"),
    Case("input-shape-model-rejects", ("--model", "zoo:digits-cnn", "--input-shape", "1x3x8x8"),
         "the model rejected input shape 1x3x8x8"),
    # budgets: values that cannot be meant are refused, never read as "not given"
    Case("budget-empty", ("--model", "zoo:digits-cnn", "--budget", ""), "--budget is empty"),
    Case("latency-empty", ("--model", "zoo:digits-cnn", "--max-latency", " "), "--max-latency is empty"),
    Case("memory-infinite", ("--model", "zoo:digits-cnn", "--max-memory", "1e999GB"), "too large to be a limit"),
    Case("memory-overflows", ("--model", "zoo:digits-cnn", "--max-memory", "1e308GB"), "too large to be a limit"),
    Case("memory-negative", ("--model", "zoo:digits-cnn", "--max-memory", "-5MB"), "must be greater than zero"),
    Case("memory-nan", ("--model", "zoo:digits-cnn", "--max-memory", "nanMB"), "not a number with a unit"),
    Case("latency-zero", ("--model", "zoo:digits-cnn", "--max-latency", "0ms"), "must be greater than zero"),
    Case("accuracy-drop-over-100", ("--model", "zoo:digits-cnn", "--eval", "zoo", "--max-accuracy-drop", "200%"),
         "cannot drop by more than 100 percentage points"),
    Case("accuracy-drop-negative", ("--model", "zoo:digits-cnn", "--eval", "zoo", "--max-accuracy-drop", "-1pp"),
         "is negative"),
    # data files
    Case("data-missing", ("--model", "zoo:digits-cnn", "--calibration", "{tmp}/none.npz"), "no such file"),
    Case("data-text-file", ("--model", "zoo:digits-cnn", "--calibration", "{tmp}/d.txt"),
         "unsupported data file .txt", _write("d.txt", b"1 2 3")),
    Case("npz-object-arrays", ("--model", "zoo:digits-cnn", "--calibration", "{tmp}/o.npz"),
         "holds Python objects", _npz("o.npz", x=np.array([{"a": 1}, None], dtype=object))),
    Case("npz-empty", ("--model", "zoo:digits-cnn", "--calibration", "{tmp}/e.npz"), "holds no arrays", _npz("e.npz")),
    Case("npz-zero-bytes", ("--model", "zoo:digits-cnn", "--calibration", "{tmp}/z.npz"), "not a readable .npz",
         _write("z.npz", b"")),
    Case("npz-is-npy", ("--model", "zoo:digits-cnn", "--calibration", "{tmp}/plain.npz"), "not an .npz archive",
         _npy_named_npz),
    Case("npz-labels-wrong-length", ("--model", "zoo:digits-cnn", "--eval", "{tmp}/l.npz"),
         "labels 'y' must hold one row per sample (4)", _npz("l.npz", x=OK_X, y=np.zeros(3, np.int64))),
    Case("npz-labels-float", ("--model", "zoo:digits-cnn", "--eval", "{tmp}/l.npz"),
         "classification needs one class index per sample",
         _npz("l.npz", x=OK_X, y=np.zeros(4))),
    Case("npz-labels-out-of-range", ("--model", "zoo:digits-cnn", "--eval", "{tmp}/l.npz"), "labels span 0..12",
         _npz("l.npz", x=OK_X, y=np.array([0, 1, 2, 12]))),
    Case("npz-labels-negative", ("--model", "zoo:digits-cnn", "--eval", "{tmp}/l.npz"), "labels span -1..2",
         _npz("l.npz", x=OK_X, y=np.array([0, 1, 2, -1]))),
    Case("npz-unlabelled-eval", ("--model", "zoo:digits-cnn", "--eval", "{tmp}/u.npz"), "has no labels",
         _npz("u.npz", x=OK_X)),
    Case("npz-nan-inputs", ("--model", "zoo:digits-cnn", "--calibration", "{tmp}/n.npz"), "NaN or infinite",
         _npz("n.npz", x=np.full((4, 1, 8, 8), np.nan))),
    Case("npz-complex-inputs", ("--model", "zoo:digits-cnn", "--calibration", "{tmp}/c.npz"), "dtype complex128",
         _npz("c.npz", x=np.zeros((4, 1, 8, 8), complex))),
    Case("npz-scalar-inputs", ("--model", "zoo:digits-cnn", "--calibration", "{tmp}/s.npz"), "shape ()",
         _npz("s.npz", x=np.float32(3))),
    Case("npz-wrong-sample-shape", ("--model", "zoo:digits-cnn", "--calibration", "{tmp}/w.npz"),
         "samples have shape (3, 8, 8)", _npz("w.npz", x=np.zeros((4, 3, 8, 8), np.float32))),
    Case("images-text-named-png", ("--model", "zoo:digits-cnn", "--calibration", "{tmp}/images"),
         "not a readable image (UnidentifiedImageError", _text_as_png),
    Case("images-truncated-png", ("--model", "zoo:digits-cnn", "--calibration", "{tmp}/images"),
         "not a readable image (OSError", _truncated_png),
    Case("images-for-a-flat-input", ("--model", "{models}:build_flat", "--calibration", "{tmp}/images"),
         "an image folder needs a 4-D model input (N, C, H, W); the model takes (1, 64)", _truncated_png),
    Case("images-without-class-directories", ("--model", "zoo:digits-cnn", "--calibration", "{tmp}/images"),
         "no class directories (1 image(s) lie directly in it)", _loose_images),
    Case("images-empty-directory", ("--model", "zoo:digits-cnn", "--eval", "{tmp}/images"),
         "no class directories (it has no subdirectories)", _mkdir("images")),
    Case("images-none-in-classes", ("--model", "zoo:digits-cnn", "--calibration", "{tmp}/images"),
         "no images found in its 1 class directories", _text_only_classes),
    Case("eval-zoo-on-non-zoo-model", ("--model", "{models}:build", "--eval", "zoo"), "has no built-in dataset"),
    # measuring options: zero cannot be meant
    Case("runs-zero", ("--model", "zoo:digits-cnn", "--runs", "0"), "--runs 0: use 1 or more"),
    Case("threads-zero", ("--model", "zoo:digits-cnn", "--threads", "0"), "--threads 0: use 1 or more"),
    Case("calibration-samples-zero", ("--model", "zoo:digits-cnn", "--calibration-samples", "0"), "use 1 or more"),
    # click's own usage errors
    Case("unknown-option", ("--model", "zoo:digits-cnn", "--bogus"), "No such option '--bogus'"),
    Case("bad-choice", ("--model", "zoo:digits-cnn", "--precision", "int4"), "'int4' is not one of"),
    # target files and recipes (parsed in config.py and compress/parse.py)
    Case("target-binary-bytes", ("--model", "zoo:digits-cnn", "--target", "{tmp}/t.yaml"), "target file",
         _write("t.yaml", b"\x00\xff\xfe\x01")),
    Case("target-threads-not-a-number", ("--model", "zoo:digits-cnn", "--target", "{tmp}/t.yaml"), "many",
         _write("t.yaml", b"name: t\nruntimes: [onnxruntime]\nthreads: many\n")),
    Case("target-measure-not-a-mapping", ("--model", "zoo:digits-cnn", "--target", "{tmp}/t.yaml"), "measure",
         _write("t.yaml", b"name: t\nruntimes: [onnxruntime]\nmeasure: fast\n")),
    Case("target-unknown-runtime-option-value", ("--model", "zoo:digits-cnn", "--target", "{tmp}/t.yaml"),
         "activation_type='int16' is not one of", _write("t.yaml", b"name: t\nruntimes:\n  onnxruntime: "
                                                                  b"{activation_type: int16}\n")),
    Case("recipe-binary-bytes", ("--model", "zoo:digits-cnn", "--recipe", "{tmp}/r.yaml"), "recipe",
         _write("r.yaml", b"\x00\xff\xfe")),
    # `edgepack check` re-judges a saved report with the same budget parsing
    Case("check-budget-empty", ("{tmp}/report.json", "--budget", ""), "--budget is empty", _saved_report,
         command="check"),
    Case("check-memory-infinite", ("{tmp}/report.json", "--max-memory", "1e999GB"), "too large to be a limit",
         _saved_report, command="check"),
    # the same loader behind compress and distill
    Case("compress-bare-tensor", ("--model", "{tmp}/t.pt", "--factory", "{models}:build", "--prune", "0.5",
                                  "--out", "{tmp}/small.pt2", "--quiet"), "holds a Tensor, not a state dict",
         _torch_file("t.pt", torch.zeros(3)), command="compress"),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_is_exit_2_with_one_line(case: Case, models: Path, tmp_path: Path) -> None:
    if case.files is not None:
        case.files(tmp_path)
    args = [a.format(tmp=tmp_path, models=models) for a in case.args]
    if case.command == "build":
        args += ["--quiet", "--out", str(tmp_path / "out")]
        args += [] if "--target" in args else ["--target", "x86-cpu"]
        args += [] if "--runs" in args else ["--runs", "3"]
    before = set(tmp_path.rglob("*"))
    result = CliRunner().invoke(cli, [case.command, *args])
    lines = result.stderr.splitlines()
    assert result.exit_code == 2, (result.exit_code, result.output)
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("edgepack: error: "), lines[0]
    assert case.expected.format(tmp=tmp_path, models=models) in lines[0], lines[0]
    assert len(lines[0]) <= 400, lines[0]
    assert result.stdout == ""
    written = sorted(str(p.relative_to(tmp_path)) for p in set(tmp_path.rglob("*")) - before)
    assert written == [], written  # a refused command leaves nothing behind, least of all a result


@pytest.fixture(scope="module")
def small_program(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    path = tmp_path_factory.mktemp("program") / "tiny.pt2"
    torch.export.save(torch.export.export(torch.nn.Linear(4, 2).eval(), (torch.randn(1, 4),)), str(path))
    return path.read_bytes()


@pytest.mark.parametrize("sidecar,fragment", [
    ("{not json", "cannot read the pass history beside tiny.pt2 (JSONDecodeError"),
    ('["a list"]', "cannot read the pass history beside tiny.pt2"),
    (None, "names zoo model 'gone'"),
])
def test_unreadable_pt2_sidecar_warns_and_loads(tmp_path: Path, small_program: bytes, sidecar: Optional[str],
                                                fragment: str) -> None:
    """A sidecar that cannot be used is not an error (the program itself is fine), but it is never skipped silently:
    the loader returns a warning with the bundle for the report and the terminal."""
    import json

    from edgepack.models.loader import load_model
    from edgepack.models.request import ModelRequest
    from edgepack.records import Provenance

    path = tmp_path / "tiny.pt2"
    path.write_bytes(small_program)
    if sidecar is None:  # well formed, but from a zoo this edgepack does not have
        sidecar = json.dumps(Provenance("zoo:gone", "zoo", "gone", "tensor", 10, 8, ((1, 4),)).to_dict())
    path.with_suffix(".json").write_text(sidecar)
    bundle, entry = load_model(ModelRequest(str(path)))
    assert entry is None and bundle.provenance.passes == ()
    assert len(bundle.load_warnings) == 1 and fragment in bundle.load_warnings[0], bundle.load_warnings
