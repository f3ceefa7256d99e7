"""Reproduce the compression seed studies on scikit-learn digits (real data, 8x8 images, 1,437 train / 360 held out).

    python benchmarks/compress_seeds.py            # about 3-5 minutes on 2 cores
    python benchmarks/compress_seeds.py --quick    # a smoke run: fewer epochs and timing runs

Two models: a ResNet-18 layout at quarter width (in_channels=1, trained here) and the zoo's trained digits-vit.
Studies, each printed as a table:
  1. SVD of the classifier at 0 / 50 / 80 % rank cut: params, accuracy before and after fine-tuning, latency
  2. the same for every Linear and Conv2d layer
  3. a rank sweep over the ViT's block Linear layers, with the parameter count checked against the formula
  4. 50 % structured pruning (torch-pruning) with fine-tuning
  5. NdLinear vs Linear in the ViT (Kronecker-initialised + fine-tuned, and trained from scratch)

Every number is computed in this run. Accuracy is eager PyTorch top-1 on the held-out split. Latency is ONNX Runtime
FP32, batch 1, one intra-op thread, in this process: 5 timed blocks (--block-seconds each, at least 200 calls) after a
warm-up; the figure is the fastest block's median (another process can stall a whole block on a shared machine), with
p10-p90 of all calls.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import logging
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from edgepack.compress import FinetuneConfig, LowRankConfig, NdLinearConfig, PassConfig, PruneConfig, apply_passes
from edgepack.data import digits
from edgepack.data.dataset import ArrayDataset
from edgepack.models import zoo
from edgepack.models.architectures import ResNetCifar
from edgepack.models.bundle import ModelBundle
from edgepack.models.loader import count_params_and_macs
from edgepack.records import Provenance
from edgepack.training import evaluate, train_classifier

RESNET_RECIPE = {"epochs": 15, "lr": 3e-3}  # reaches ~99 % held-out on digits
VIT_RECIPE = {"epochs": 60, "lr": 2e-3}  # the recipe the zoo's digits-vit weights were trained with
CUTS = (0.0, 0.5, 0.8)
SWEEP_RANKS = (1, 2, 4, 8, 16, 24, 31, 32, 36, 48)


# ---- helpers ----

def make_bundle(module: nn.Module, example: torch.Tensor, name: str) -> ModelBundle:
    module = module.eval()
    params, macs = count_params_and_macs(module, (example,))
    provenance = Provenance(source=name, kind="python", model_name=name, output_taken="tensor", params=params,
                            macs=macs, input_shapes=(tuple(example.shape),))
    return ModelBundle(module, (example,), ("input",), provenance)


class Latency:
    """ONNX Runtime FP32 latency of a module at batch 1 with one thread.

    The runs are split into blocks and the figure is the fastest block's median: on a shared 2-core machine another
    process can stall a whole stretch of runs, and that says nothing about the model. p10-p90 cover every run.
    The same module object is measured once, so a baseline shown in several tables has one figure.
    """

    BLOCKS = 5

    def __init__(self, example: torch.Tensor, block_seconds: float, min_runs: int, warmup: int) -> None:
        self.example, self.block_seconds, self.min_runs, self.warmup = example, block_seconds, min_runs, warmup
        self._cache: dict[int, tuple[nn.Module, str]] = {}

    def __call__(self, module: nn.Module) -> str:
        if id(module) not in self._cache:
            self._cache[id(module)] = (module, self._measure(module))  # keeping the module keeps its id unique
        return self._cache[id(module)][1]

    def _measure(self, module: nn.Module) -> str:
        import onnxruntime as ort

        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "model.onnx"
            with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                torch.onnx.export(module.eval(), (self.example,), str(path), dynamo=True, external_data=False)
            options = ort.SessionOptions()
            options.intra_op_num_threads = 1
            options.inter_op_num_threads = 1
            options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
            session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
            feed = {session.get_inputs()[0].name: self.example.numpy()}
            (out,) = session.run(None, feed)
            with torch.no_grad():
                reference = module(self.example).numpy()
            if np.abs(out - reference).max() > 1e-3:  # a wrong export would make its timing meaningless
                raise RuntimeError(f"ONNX output differs from eager by {np.abs(out - reference).max():.2e}")
            for _ in range(self.warmup):
                session.run(None, feed)
            blocks = []
            for _ in range(self.BLOCKS):  # blocks of fixed duration, apart in time, so one stall spoils one block
                block: list[float] = []
                block_end = time.perf_counter() + self.block_seconds
                while len(block) < self.min_runs or time.perf_counter() < block_end:
                    start = time.perf_counter_ns()
                    session.run(None, feed)
                    block.append((time.perf_counter_ns() - start) / 1e6)
                blocks.append(block)
                time.sleep(0.05)
        best = min(statistics.median(b) for b in blocks)
        p10, p90 = np.percentile([t for b in blocks for t in b], [10, 90])
        return f"{best:.3f} ({p10:.3f}-{p90:.3f})"


def table(title: str, headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    cells = [[_fmt(v) for v in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(headers)]
    print(f"\n## {title}\n")
    print("| " + " | ".join(h.ljust(w) for h, w in zip(headers, widths)) + " |")
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for row in cells:
        print("| " + " | ".join(v.ljust(w) for v, w in zip(row, widths)) + " |")
    sys.stdout.flush()


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4f}"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return str(value)


def pct(acc: float | None) -> str:
    return "-" if acc is None else f"{acc * 100:.2f}"


def compress(bundle: ModelBundle, configs: list[PassConfig], train: ArrayDataset, test: ArrayDataset,
             finetune: FinetuneConfig) -> tuple[ModelBundle, ModelBundle]:
    """(compressed, compressed + fine-tuned), both with their pass records."""
    compressed = apply_passes(bundle, configs, train=train, eval=test) if configs else bundle
    tuned = apply_passes(compressed, [finetune], train=train, eval=test)
    return compressed, tuned


def accuracy(bundle: ModelBundle, test: ArrayDataset) -> float:
    return evaluate(bundle.module, test)


# ---- the studies ----

def study_classifier_svd(models: dict[str, ModelBundle], heads: dict[str, str], train: ArrayDataset,
                         test: ArrayDataset, finetune: FinetuneConfig, latency: Latency) -> None:
    rows = []
    for name, bundle in models.items():
        head = heads[name]
        for cut in CUTS:
            configs = [LowRankConfig(ratio=cut, min_params=0, layers=(head,))] if cut else []
            compressed, tuned = compress(bundle, configs, train, test, finetune)
            layer = compressed.module.get_submodule(head)
            rank = layer[0].out_features if isinstance(layer, nn.Sequential) else min(layer.weight.shape)
            rows.append([name, f"{int(cut * 100)}%", rank, sum(p.numel() for p in layer.parameters()),
                         compressed.provenance.params, pct(accuracy(compressed, test)), pct(accuracy(tuned, test)),
                         latency(compressed.module)])
    table(f"1. SVD of the classifier (fine-tune: {finetune.epochs} epochs, lr {finetune.lr}; the 0% row is "
          f"fine-tuned too, as a control)",
          ["model", "rank cut", "rank", "classifier params", "model params", "acc % (no FT)", "acc % (FT)",
           "ORT ms (p10-p90)"], rows)


def study_all_layers(models: dict[str, ModelBundle], train: ArrayDataset, test: ArrayDataset,
                     finetune: FinetuneConfig, latency: Latency) -> None:
    rows = []
    for name, bundle in models.items():
        for cut in CUTS:
            configs = ([LowRankConfig(ratio=cut, min_params=0, targets="all", keep_classifier=False)]
                       if cut else [])
            compressed, tuned = compress(bundle, configs, train, test, finetune)
            record = compressed.provenance.passes[-1] if cut else None
            layers = f"{len(record.changes)}/{len(record.changes) + len(record.skipped)}" if record else "0"
            rows.append([name, f"{int(cut * 100)}%", layers, compressed.provenance.params,
                         compressed.provenance.macs, pct(accuracy(compressed, test)), pct(accuracy(tuned, test)),
                         latency(compressed.module)])
    table(f"2. SVD of every Linear and Conv2d layer (layers: factorized/considered; skipped ones would not shrink; "
          f"fine-tune {finetune.epochs} epochs)",
          ["model", "rank cut", "layers", "params", "MACs", "acc % (no FT)", "acc % (FT)", "ORT ms (p10-p90)"],
          rows)


def study_rank_sweep(vit: ModelBundle, test: ArrayDataset) -> None:
    linears = [(n, m) for n, m in vit.module.named_modules() if isinstance(m, nn.Linear) and n.startswith("blocks.")]
    base = vit.provenance.params
    rows = []
    for rank in SWEEP_RANKS:
        out = apply_passes(vit, [LowRankConfig(rank=rank, min_params=0, layers=("blocks",))])
        record = out.provenance.passes[-1]
        # independent arithmetic: a layer is factorized iff rank < out*in/(out+in), then holds rank*(in+out) + bias
        expected = base
        factorized = 0
        for _, m in linears:
            if rank < m.out_features * m.in_features / (m.out_features + m.in_features):
                expected -= m.out_features * m.in_features - rank * (m.in_features + m.out_features)
                factorized += 1
        measured = sum(p.numel() for p in out.module.parameters())
        rows.append([rank, f"{len(record.changes)}/{len(linears)}", measured, expected,
                     "ok" if measured == expected == record.params_after and factorized == len(record.changes)
                     else "MISMATCH", f"{measured / base:.3f}", pct(accuracy(out, test))])
    table("3. Rank sweep over the ViT's block Linear layers (qkv 48->144 breaks even at 36, fc1/fc2 at 32, "
          "proj at 24; no fine-tuning)",
          ["rank", "layers factorized", "params (model)", "params (formula)", "check", "params ratio", "acc %"], rows)


def study_pruning(models: dict[str, ModelBundle], train: ArrayDataset, test: ArrayDataset,
                  finetune: FinetuneConfig, latency: Latency) -> None:
    rows = []
    variants: dict[str, list[tuple[str, list[PassConfig]]]] = {
        "resnet": [("prune 0.5", [PruneConfig(ratio=0.5)]),
                   ("prune 0.5, 3 steps + 1 epoch each", [PruneConfig(ratio=0.5, steps=3, epochs=1)])],
        "vit": [("prune 0.5 (head dims)", [PruneConfig(ratio=0.5)]),
                ("prune 0.5 + heads 0.5", [PruneConfig(ratio=0.5, heads=0.5)])],
    }
    for name, bundle in models.items():
        rows.append([name, "baseline", bundle.provenance.params, bundle.provenance.macs, pct(accuracy(bundle, test)),
                     "-", latency(bundle.module)])
        for label, configs in variants[name]:
            compressed, tuned = compress(bundle, configs, train, test, finetune)
            rows.append([name, label, compressed.provenance.params, compressed.provenance.macs,
                         pct(accuracy(compressed, test)), pct(accuracy(tuned, test)), latency(compressed.module)])
    table(f"4. Structured pruning at 50 % (torch-pruning, group L2 importance, round_to 8; FT {finetune.epochs} "
          f"epochs)", ["model", "variant", "params", "MACs", "acc % (no FT)", "acc % (FT)", "ORT ms (p10-p90)"],
          rows)


def study_ndlinear(vit: ModelBundle, example: torch.Tensor, train: ArrayDataset, test: ArrayDataset,
                   finetune: FinetuneConfig, latency: Latency, recipe: dict[str, Any]) -> None:
    rows = [["Linear (zoo weights)", "-", vit.provenance.params, vit.provenance.macs, pct(accuracy(vit, test)), "-",
             latency(vit.module)]]
    for label, layers in (("NdLinear MLP (fc1, fc2)", tuple(f"blocks.{i}.mlp" for i in range(len(vit.module.blocks)))),
                          ("NdLinear all block Linears", ("blocks",))):
        compressed, tuned = compress(vit, [NdLinearConfig(min_params=0, layers=layers)], train, test, finetune)
        fits = [c.kronecker_fit for c in compressed.provenance.passes[-1].changes if c.kronecker_fit is not None]
        rows.append([label, f"{min(fits):.3f}-{max(fits):.3f}", compressed.provenance.params,
                     compressed.provenance.macs, pct(accuracy(compressed, test)), pct(accuracy(tuned, test)),
                     latency(compressed.module)])
    # the zoo's full training recipe: from random init (structure alone) and from the Kronecker init
    for label, convert, from_zoo in (("Linear, from scratch", False, False),
                                     ("NdLinear all, from scratch", True, False),
                                     ("NdLinear all, Kronecker init + full recipe", True, True)):
        torch.manual_seed(0)
        bundle = vit if from_zoo else make_bundle(zoo.entry("digits-vit").build(), example, "digits-vit")
        if convert:
            bundle = apply_passes(bundle, [NdLinearConfig(min_params=0, layers=("blocks",))])
        train_classifier(bundle.module, train, seed=0, **recipe)
        rows.append([label, "-", sum(p.numel() for p in bundle.module.parameters()), bundle.provenance.macs, "-",
                     pct(accuracy(bundle, test)), latency(bundle.module)])
    table(f"5. NdLinear vs Linear in the ViT (Kronecker fit = share of |W|^2 the init captures; FT {finetune.epochs} "
          f"epochs; from-scratch rows use the zoo recipe, {recipe['epochs']} epochs, in the FT column)",
          ["variant", "Kronecker fit", "params", "MACs", "acc % (init)", "acc % (FT / trained)",
           "ORT ms (p10-p90)"], rows)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer epochs and timing runs (a smoke run)")
    parser.add_argument("--block-seconds", type=float, default=0.4,
                        help="duration of each of the 5 timing blocks per model (at least 200 calls each)")
    parser.add_argument("--finetune-epochs", type=int, default=5)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    warnings.filterwarnings("ignore")
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)  # per-export notes about optional torchvision ops
    started = time.perf_counter()

    train, test = digits.load_split()
    example = torch.from_numpy(test.inputs[:1].copy())
    block_seconds = 0.05 if args.quick else args.block_seconds
    latency = Latency(example, block_seconds=block_seconds, min_runs=200, warmup=100)
    finetune = FinetuneConfig(epochs=1 if args.quick else args.finetune_epochs, lr=1e-3)
    resnet_recipe = dict(RESNET_RECIPE, epochs=2) if args.quick else RESNET_RECIPE
    vit_recipe = dict(VIT_RECIPE, epochs=2) if args.quick else VIT_RECIPE

    torch.manual_seed(0)
    resnet = ResNetCifar((2, 2, 2, 2), in_channels=1, width=16)
    train_classifier(resnet, train, seed=0, **resnet_recipe)
    models = {"resnet": make_bundle(resnet, example, "resnet18-w16-digits"),
              "vit": make_bundle(zoo.build("digits-vit"), example, "digits-vit")}
    import onnxruntime

    print(f"# edgepack compression seed studies on scikit-learn digits ({len(train)} train / {len(test)} held out)")
    print(f"resnet: ResNet-18 layout, width 16, trained {resnet_recipe['epochs']} epochs here, "
          f"{models['resnet'].provenance.params:,} params, {accuracy(models['resnet'], test) * 100:.2f}% held-out")
    print(f"vit: zoo digits-vit (dim 48, 3 blocks, 4 heads), {models['vit'].provenance.params:,} params, "
          f"{accuracy(models['vit'], test) * 100:.2f}% held-out")
    print(f"latency: ONNX Runtime {onnxruntime.__version__} FP32, batch 1, 1 thread, in-process; {Latency.BLOCKS} "
          f"blocks of {block_seconds} s (>= 200 calls each): fastest block median (p10-p90 of all calls); "
          f"torch {torch.__version__}")

    study_classifier_svd(models, {"resnet": "fc", "vit": "head"}, train, test, finetune, latency)
    study_all_layers(models, train, test, finetune, latency)
    study_rank_sweep(models["vit"], test)
    study_pruning(models, train, test, finetune, latency)
    study_ndlinear(models["vit"], example, train, test, finetune, latency, vit_recipe)
    print(f"\n(total {time.perf_counter() - started:.0f} s)")


if __name__ == "__main__":
    main()
