"""Coverage benchmark: how far `edgepack build` gets on real third-party architectures.

Each model below is written as a small model file (a `build()` returning `(module, example_input)`) into a temporary
directory and built with the real CLI in a subprocess, exactly as a user would run it:

    edgepack build --model FILE:build --target T --threads 1 --runs 5 --no-bundle --allow-partial --json --quiet \
        [--calibration FILE-calib.npz --eval FILE-eval.npz]

for T in x86-cpu (its default runtime, ONNX Runtime) and android-arm64 (ExecuTorch and LiteRT, measured on this host).
The architectures come from Hugging Face `transformers` configs (ResNet, MobileNetV2, EfficientNet, ConvNeXt, ViT,
Swin, MobileViT, LeViT, BERT and DistilBERT with token ids and an attention mask, Wav2Vec2 on raw audio) with tiny
sizes (nothing is downloaded), plus plain PyTorch models (LSTM and GRU classifiers, an embedding + LSTM text
classifier, a 1-D conv classifier, a small U-Net with a segmentation output).

Weights: with `--weights digits` (the default) each model is trained briefly on scikit-learn's digits first and built
with digits as calibration and eval data (_digits_weights.py says how a digit becomes each kind of input and why).
With `--weights random`, weights are re-initialised with PyTorch's defaults and BatchNorm statistics are set from
seeded random batches (Hugging Face's init with identity running statistics gives near-constant logits on deep CNNs),
and the data are synthetic: parity then only says whether the int8 artifact tracks a random model, whose close logits
make top-1 agreement fragile.

The Markdown table printed on stdout has one row per (model, target, runtime): how the model was trained, the build's
exit code and wall time, whether the runtime shipped (with the export path of what shipped, report.json
`artifacts[].export_path`) or failed (with the reason from report.json `failures`; an artifact below the parity
floor fails at "parity"), the int8 parity figure of the model's task (top-1 agreement, per-pixel agreement, cosine or
relative error; report.json `parity`, artifact `<runtime>-int8`) and, with digits, the int8 and fp32 accuracy on
held-out digits (report.json `accuracy`), the int8 p50 against the fp32 p50 (report.json `measurements`; 5 timed runs,
1 thread, so only a rough ratio), and for exit codes 1 and 2 the one-line error from stderr.

    python benchmarks/coverage.py                          # every model, both targets (about 40 minutes on 2 cores)
    python benchmarks/coverage.py --quick                  # a small subset, to check the script
    python benchmarks/coverage.py --models resnet,swin --targets x86-cpu --timeout 120
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, replace
from importlib import metadata
from pathlib import Path
from typing import Optional

from _digits_weights import LOAD_TRAINED, train_and_save  # benchmarks/ is on sys.path when a script runs

TARGETS = {"x86-cpu": ("onnxruntime",), "android-arm64": ("executorch", "litert")}

# Shared by every generated model file: the file must stand alone, since edgepack imports it by path.
PRELUDE = '''\
import torch
from torch import nn


def prepare(model, example, batches=4):
    """PyTorch default init, then BatchNorm statistics from seeded random batches (train mode), then eval."""
    for m in model.modules():
        if callable(getattr(m, "reset_parameters", None)):
            m.reset_parameters()
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over the batches instead of the last one dominating
    model.train()
    with torch.no_grad():
        for i in range(batches):
            model(torch.randn((8, *example.shape[1:]), generator=torch.Generator().manual_seed(100 + i)))
    for m, momentum in zip(norms, momenta):
        m.momentum = momentum
    return model.eval(), example


class Logits(nn.Module):
    """A Hugging Face model called the way edge apps call it: one image tensor in, the logits tensor out."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model(pixel_values=x).logits


class ConvBN(nn.Sequential):
    def __init__(self, cin, cout, dims=2, stride=1):
        conv, norm = (nn.Conv2d, nn.BatchNorm2d) if dims == 2 else (nn.Conv1d, nn.BatchNorm1d)
        super().__init__(conv(cin, cout, 3, stride=stride, padding=1, bias=False), norm(cout), nn.ReLU())
'''


def hf(config_class: str, model_class: str, config: str, shape: str) -> str:
    return f'''
def build():
    from transformers import {config_class}, {model_class}

    torch.manual_seed(0)
    model = {model_class}({config_class}({config}))
    return prepare(Logits(model), torch.randn({shape}))
'''


def hf_text(config_class: str, model_class: str, config: str, vocab: int, seq: int) -> str:
    """A text model called as apps call it: token ids and an attention mask, by keyword."""
    return f'''
def build():
    from transformers import {config_class}, {model_class}

    torch.manual_seed(0)
    model = {model_class}({config_class}({config})).eval()
    ids = torch.randint(0, {vocab}, (1, {seq}), generator=torch.Generator().manual_seed(1))
    return model, {{"input_ids": ids, "attention_mask": torch.ones(1, {seq}, dtype=torch.long)}}
'''


def plain(classes: str, make: str, shape: str) -> str:
    return f'''
{classes}

def build():
    torch.manual_seed(0)
    return prepare({make}, torch.randn({shape}))
'''


RECURRENT = '''
class Recurrent(nn.Module):
    """An 8x8 image read as 8 steps of 8 features; called without an initial state, as most user code does."""

    def __init__(self, cell, hidden=32, classes=10):
        super().__init__()
        self.rnn = cell(8, hidden, batch_first=True)
        self.head = nn.Linear(hidden, classes)

    def forward(self, x):
        out, _ = self.rnn(x.reshape(x.shape[0], 8, 8))
        return self.head(out[:, -1])
'''

CONV1D = '''
class Conv1dNet(nn.Module):
    """A keyword-spotting-style classifier over 4 channels x 64 steps."""

    def __init__(self, classes=10):
        super().__init__()
        self.features = nn.Sequential(ConvBN(4, 16, 1), ConvBN(16, 32, 1, 2), ConvBN(32, 64, 1, 2))
        self.head = nn.Linear(64, classes)

    def forward(self, x):
        return self.head(self.features(x).mean(-1))
'''

TEXT_LSTM = '''
class TextLSTM(nn.Module):
    """Embedding + LSTM over 32 token ids: the classic on-device text classifier."""

    def __init__(self, vocab=500, classes=10):
        super().__init__()
        self.embed = nn.Embedding(vocab, 32)
        self.rnn = nn.LSTM(32, 48, batch_first=True)
        self.head = nn.Linear(48, classes)

    def forward(self, tokens):
        out, _ = self.rnn(self.embed(tokens))
        return self.head(out[:, -1])


def build():
    torch.manual_seed(0)
    return TextLSTM().eval(), torch.randint(0, 500, (1, 32))
'''

WAV2VEC2 = '''
def build():
    from transformers import Wav2Vec2Config, Wav2Vec2ForSequenceClassification

    torch.manual_seed(0)
    config = Wav2Vec2Config(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                            conv_dim=(16, 16), conv_stride=(5, 2), conv_kernel=(10, 3), num_feat_extract_layers=2,
                            num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4, num_labels=10,
                            do_stable_layer_norm=True, feat_extract_norm="layer")
    model = Wav2Vec2ForSequenceClassification(config).eval()
    return model, {"input_values": torch.randn(1, 1024, generator=torch.Generator().manual_seed(1))}
'''

UNET = '''
class UNet(nn.Module):
    """Two-level U-Net: a per-pixel map of 2 classes, not class logits."""

    def __init__(self, classes=2):
        super().__init__()
        self.enc1 = nn.Sequential(ConvBN(3, 16), ConvBN(16, 16))
        self.enc2 = nn.Sequential(ConvBN(16, 32, stride=2), ConvBN(32, 32))
        self.mid = nn.Sequential(ConvBN(32, 64, stride=2), ConvBN(64, 64))
        self.up2 = nn.ConvTranspose2d(64, 32, 2, stride=2)
        self.dec2 = ConvBN(64, 32)
        self.up1 = nn.ConvTranspose2d(32, 16, 2, stride=2)
        self.dec1 = ConvBN(32, 16)
        self.out = nn.Conv2d(16, classes, 1)

    def forward(self, x):
        e1 = self.enc1(x)
        e2 = self.enc2(e1)
        d2 = self.dec2(torch.cat([self.up2(self.mid(e2)), e2], 1))
        return self.out(self.dec1(torch.cat([self.up1(d2), e1], 1)))
'''

# name -> model file body, or the reason it is not run. Configs are tiny so a build takes seconds, not minutes.
MODELS: dict[str, str] = {
    "resnet": hf("ResNetConfig", "ResNetForImageClassification",
                 "embedding_size=16, hidden_sizes=[16, 32, 64, 128], depths=[1, 1, 1, 1], layer_type='basic', "
                 "num_labels=10", "1, 3, 64, 64"),
    "mobilenetv2": hf("MobileNetV2Config", "MobileNetV2ForImageClassification",
                      "depth_multiplier=0.5, image_size=32, num_labels=10", "1, 3, 32, 32"),
    # width 0.25 makes the head 320 wide: its AvgPool2d(320, ceil_mode=True) then pools a 2x2 map, as in B0 at 64 px.
    "efficientnet": hf("EfficientNetConfig", "EfficientNetForImageClassification",
                       "image_size=64, width_coefficient=0.25, depth_coefficient=0.25, hidden_dim=320, "
                       "dropout_rate=0.0, drop_connect_rate=0.0, num_labels=10", "1, 3, 64, 64"),
    # layer scale 1.0 rather than 1e-6: a trained ConvNeXt's blocks contribute, a fresh one's would not.
    "convnext": hf("ConvNextConfig", "ConvNextForImageClassification",
                   "hidden_sizes=[16, 32, 64, 128], depths=[1, 1, 1, 1], layer_scale_init_value=1.0, "
                   "image_size=64, num_labels=10", "1, 3, 64, 64"),
    "vit": hf("ViTConfig", "ViTForImageClassification",
              "image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, "
              "intermediate_size=64, num_labels=10", "1, 3, 32, 32"),
    # Two blocks per stage: the second one shifts its windows, the path with Swin's integer attention mask.
    "swin": hf("SwinConfig", "SwinForImageClassification",
               "image_size=32, patch_size=2, embed_dim=16, depths=[2, 2], num_heads=[1, 2], window_size=4, "
               "drop_path_rate=0.0, num_labels=10", "1, 3, 32, 32"),
    # The configuration issue 9 sets as the build-time target for android-arm64.
    "mobilevit": hf("MobileViTConfig", "MobileViTForImageClassification",
                    "image_size=64, patch_size=2, hidden_sizes=[32, 48, 64], neck_hidden_sizes=[8, 16, 24, 32, 40, "
                    "48, 160], num_attention_heads=2, mlp_ratio=2.0, num_labels=10", "1, 3, 64, 64"),
    "levit": hf("LevitConfig", "LevitForImageClassification",
                "image_size=64, hidden_sizes=[32, 48, 64], num_attention_heads=[2, 2, 2], depths=[1, 1, 1], "
                "key_dim=[8, 8, 8], num_labels=10", "1, 3, 64, 64"),
    "lstm": plain(RECURRENT, "Recurrent(nn.LSTM)", "1, 1, 8, 8"),
    "gru": plain(RECURRENT, "Recurrent(nn.GRU)", "1, 1, 8, 8"),
    "conv1d": plain(CONV1D, "Conv1dNet()", "1, 4, 64"),
    "unet": plain(UNET, "UNet()", "1, 3, 32, 32"),
    "bert": hf_text("BertConfig", "BertForSequenceClassification",
                    "vocab_size=1000, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, "
                    "intermediate_size=64, max_position_embeddings=64, num_labels=10", 1000, 32),
    "distilbert": hf_text("DistilBertConfig", "DistilBertForSequenceClassification",
                          "vocab_size=1000, dim=32, n_layers=2, n_heads=2, hidden_dim=64, "
                          "max_position_embeddings=64, num_labels=10", 1000, 32),
    "text-lstm": TEXT_LSTM,
    # 1024 samples of raw audio (64 ms at 16 kHz) through two conv feature layers and two transformer layers
    "wav2vec2": WAV2VEC2,
}
QUICK = ("resnet", "gru", "bert")


@dataclass
class Build:
    model: str
    target: str
    exit: str  # the exit code, or "timeout"
    seconds: Optional[float]
    report: Optional[dict]
    error: str  # the one-line error on stderr for exit codes 1 and 2
    weights: str = "random weights"  # or how it was trained on digits


def edgepack_command() -> list[str]:
    """The console script of this interpreter's environment, so the subprocess runs the same install."""
    beside = Path(sys.executable).with_name("edgepack")
    if beside.exists():
        return [str(beside)]
    found = shutil.which("edgepack")
    if found:
        return [found]
    return [sys.executable, "-c", "from edgepack.cli import main; main()"]


ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def one_line(text: str, limit: int) -> str:
    text = " ".join(ANSI.sub("", text).split()).replace("|", "\\|")
    return text if len(text) <= limit else text[:limit - 1] + "…"


def error_line(stderr: str) -> str:
    """edgepack's own error line (warnings and native output may come before it)."""
    lines = [ln.strip() for ln in ANSI.sub("", stderr).splitlines() if ln.strip()]
    for ln in lines:
        if ln.startswith("edgepack:") and not ln.startswith("edgepack: native output"):
            return ln
    return lines[-1] if lines else ""


def failed_runtimes(error: str) -> dict[str, str]:
    """Per-runtime reasons from the line edgepack prints when every runtime failed ("a: why; b: why")."""
    body = re.sub(r"^edgepack: (internal )?error: ", "", error)
    names = "|".join(r for runtimes in TARGETS.values() for r in runtimes)
    parts = re.split(rf"(?:^|; )({names}): ", body)
    # parts = [text before the first runtime, name, reason, name, reason, ...]
    return {parts[i]: re.sub(rf"^{parts[i]}: ", "", parts[i + 1]) for i in range(1, len(parts) - 1, 2)}


def run_build(name: str, target: str, workdir: Path, timeout: float, data: tuple[Path, Path] | None) -> Build:
    """One `edgepack build` of the model file written by `write_model` (with digits data when `data` is given)."""
    model_file = workdir / f"{name}.py"
    out = workdir / f"{name}-{target}"
    cmd = edgepack_command() + [
        "build", "--model", f"{model_file}:build", "--target", target, "--threads", "1", "--runs", "5",
        "--no-bundle", "--allow-partial", "--json", "--quiet", "--out", str(out)]
    if data is not None:
        cmd += ["--calibration", str(data[0]), "--eval", str(data[1])]
    start = time.perf_counter()
    # Own session, so a timeout ends the measuring children too, not only the CLI process.
    proc = subprocess.Popen(cmd, cwd=workdir, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        return Build(name, target, "timeout", time.perf_counter() - start, None, f"no result within {timeout:.0f} s")
    seconds = time.perf_counter() - start
    report = None
    path = out / "report.json"
    try:
        report = json.loads(path.read_text()) if path.exists() else json.loads(stdout)
    except ValueError:
        pass  # exit 1/2 write no report; the stderr line says why
    error = error_line(stderr) if proc.returncode in (1, 2) else ""
    return Build(name, target, str(proc.returncode), seconds, report, error)


def write_model(name: str, workdir: Path, weights: str) -> tuple[tuple[Path, Path] | None, str]:
    """Write the model file; with digits weights, train it first and return its (calibration, eval) data and a
    note on the training."""
    model_file = workdir / f"{name}.py"
    model_file.write_text(PRELUDE + MODELS[name])
    if weights == "random":
        return None, "random weights"
    calibration, evaluation, note = train_and_save(model_file, workdir)
    model_file.write_text(PRELUDE + MODELS[name] + LOAD_TRAINED)
    return (calibration, evaluation), note


def runtime_cells(build: Build, runtime: str) -> tuple[str, str, str]:
    """(result, int8 top-1 agreement, int8 p50 vs fp32 p50) of one runtime in one build."""
    report = build.report
    if report is None:
        reason = failed_runtimes(build.error).get(runtime)
        return (f"failed: {one_line(reason, 90)}" if reason else "failed"), "", ""
    failure = next((f for f in report.get("failures", []) if f.get("runtime") == runtime), None)
    shipped = [name for name in report.get("shipping", []) if name.startswith(f"{runtime}-")]
    paths = {a["name"]: a.get("export_path", "") for a in report.get("artifacts", [])}
    if failure is not None:
        result = f"failed at {failure.get('stage', '?')}: {one_line(failure.get('reason', ''), 90)}"
    elif shipped:
        result = "shipped " + ", ".join(f"{name} ({one_line(paths[name], 160)})" if paths.get(name) else name
                                        for name in shipped)
    else:
        result = "not built"
    parity = {p["artifact"]: p for p in report.get("parity", [])}
    int8 = parity.get(f"{runtime}-int8")
    agreement = parity_cell(int8) if int8 else ""
    accuracy = {a["artifact"]: a for a in report.get("accuracy", [])}
    scores = [_accuracy_score(accuracy.get(f"{runtime}-{p}")) for p in ("int8", "fp32")]
    if agreement and all(score is not None for score in scores):
        agreement += f"; accuracy {scores[0]:.3f} int8, {scores[1]:.3f} fp32"
    p50 = {m["artifact"]: m["p50_ms"] for m in report.get("measurements", [])}
    q, f = p50.get(f"{runtime}-int8"), p50.get(f"{runtime}-fp32")
    if q is not None and f is not None:
        latency = f"{q:.3f} / {f:.3f} ms ({q / f:.2f}×)"
    elif q is not None or f is not None:
        latency = f"int8 {q:.3f} ms" if q is not None else f"fp32 {f:.3f} ms"
    else:
        latency = ""
    return result, agreement, latency


def _accuracy_score(accuracy: Optional[dict]) -> Optional[float]:
    """The task's accuracy figure of one report.json `accuracy` entry (top-1, or mean IoU for segmentation)."""
    if accuracy is None:
        return None
    value = accuracy.get("value")
    return value if value is not None else accuracy.get("top1")


def parity_cell(parity: dict) -> str:
    """The figure the parity floor judges for the model's task (report.json `parity`)."""
    task = parity.get("task", "classification")
    if task in ("classification", "segmentation") and parity.get("top1_agreement") is not None:
        return f"{parity['top1_agreement']:.3f}" + (" (pixels)" if task == "segmentation" else "")
    if task == "embedding" and parity.get("cosine") is not None:
        return f"cos {parity['cosine']:.4f}"
    return f"rel err {parity.get('relative_error', 0):.3g}"


def table(builds: list[Build]) -> str:
    rows = ["| model | weights | target | exit | wall s | runtime | result | int8 parity | int8 / fp32 p50 | stderr |",
            "|---|---|---|---|---|---|---|---|---|---|"]
    for b in builds:
        seconds = f"{b.seconds:.0f}" if b.seconds is not None else ""
        for runtime in TARGETS[b.target]:
            result, agreement, latency = runtime_cells(b, runtime)
            rows.append(f"| {b.model} | {b.weights} | {b.target} | {b.exit} | {seconds} | {runtime} | {result} "
                        f"| {agreement} | {latency} | {one_line(b.error, 160)} |")
    return "\n".join(rows)


def version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def pick(text: Optional[str], known: list[str], what: str) -> Optional[list[str]]:
    if text is None:
        return None
    chosen = [t.strip() for t in text.split(",") if t.strip()]
    unknown = [t for t in chosen if t not in known]
    if unknown:
        raise SystemExit(f"unknown {what}: {', '.join(unknown)} (known: {', '.join(known)})")
    return chosen


def main() -> None:
    everything = list(MODELS)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", help=f"comma-separated subset of: {','.join(everything)}")
    parser.add_argument("--targets", help=f"comma-separated subset of: {','.join(TARGETS)}")
    parser.add_argument("--quick", action="store_true", help=f"only {','.join(QUICK)} (a fast check)")
    parser.add_argument("--timeout", type=float, default=600,
                        help="seconds per build (default 600: a failed int8 artifact's rescue may take 300)")
    parser.add_argument("--weights", choices=("digits", "random"), default="digits",
                        help="digits (default): train each model briefly on digits and build with digits as "
                             "calibration and eval data; random: seeded random weights and synthetic data")
    args = parser.parse_args()
    models = pick(args.models, everything, "model") or (list(QUICK) if args.quick else everything)
    targets = pick(args.targets, list(TARGETS), "target") or list(TARGETS)

    began = time.perf_counter()
    builds: list[Build] = []
    with tempfile.TemporaryDirectory(prefix="edgepack-coverage-") as tmp:
        for name in models:
            data, weights = write_model(name, Path(tmp), args.weights)
            print(f"{name}: {weights}", file=sys.stderr, flush=True)
            for target in targets:
                b = replace(run_build(name, target, Path(tmp), args.timeout, data), weights=weights)
                builds.append(b)
                # Progress on stderr, so a long run can be followed while stdout keeps only the table.
                print(f"{name} {target}: exit {b.exit} in {b.seconds:.0f} s", file=sys.stderr, flush=True)
    total = time.perf_counter() - began

    print(f"edgepack {version('edgepack')} · torch {version('torch')} · transformers {version('transformers')} · "
          f"{os.cpu_count()} cores · {args.weights} weights · --threads 1 --runs 5 --allow-partial · "
          f"timeout {args.timeout:.0f} s per build\n")
    print(table(builds))
    print(f"\nTotal wall time: {total:.0f} s ({len(builds)} builds)")


if __name__ == "__main__":
    main()
