"""Teacher size vs distilled student accuracy on scikit-learn digits (1,437 train / 360 held-out 8x8 images).

    python benchmarks/distill_teacher_size.py [--seeds 3] [--epochs 20]     # about 3 minutes on 2 cores

Teachers: DigitsCNN at width 0.5, 1 and 2, trained here (30 epochs, the zoo's recipe). Student: DigitsCNN at width
0.25, random init, the same init and seed for every column. Two regimes:

- all labels: the student trains `--epochs` epochs on the labelled train split, from scratch (cross-entropy) or by
  distillation (T=4, alpha=0.9), in one stage or progressively (teacher assistants, at most 3x params per stage,
  `--epochs` per stage, so more epochs in all);
- 100 labels: only 100 train images keep their labels. Scratch trains on those 100; distillation (alpha=1) lets the
  teacher label all 1,437 train inputs. Both take the same number of optimizer steps (10 epochs of 1,437).

Cells are held-out top-1, mean ± standard deviation over seeds. Every number is computed in this run.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import time

import numpy as np
import torch

from edgepack.compress import DistillConfig
from edgepack.compress.distillation import distill
from edgepack.data import digits
from edgepack.models.architectures import DigitsCNN
from edgepack.training import evaluate, train_classifier

TEACHER_WIDTHS = (0.5, 1.0, 2.0)
STUDENT_WIDTH = 0.25
LR = 1e-2
SCARCE_LABELS, SCARCE_EPOCHS = 100, 10


def cell(values: list[float]) -> str:
    mean = statistics.mean(values) * 100
    spread = statistics.stdev(values) * 100 if len(values) > 1 else 0.0
    return f"{mean:.1f} ± {spread:.1f}"


def student(seed: int) -> DigitsCNN:
    torch.manual_seed(seed)
    return DigitsCNN(width=STUDENT_WIDTH)


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=20, help="student epochs with all labels (per stage)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    started = time.perf_counter()
    train, test = digits.load_split()
    seeds = range(args.seeds)
    few_idx = np.random.default_rng(0).permutation(len(train))[:SCARCE_LABELS]
    few = train.select(few_idx)
    unlabelled = dataclasses.replace(train, labels=None)
    scarce_scratch_epochs = round(SCARCE_EPOCHS * len(train) / SCARCE_LABELS)

    scratch = [evaluate(train_classifier(student(s), train, args.epochs, lr=LR, seed=s), test) for s in seeds]
    scarce = [evaluate(train_classifier(student(s), few, scarce_scratch_epochs, lr=LR, seed=s), test) for s in seeds]
    student_params = sum(p.numel() for p in student(0).parameters())

    rows = []
    for width in TEACHER_WIDTHS:
        torch.manual_seed(0)
        teacher = train_classifier(DigitsCNN(width=width), train, 30, lr=3e-3, seed=0)
        one, progressive, no_labels, stages = [], [], [], 1
        for s in seeds:
            # the student is handed to distill() directly; the config's width only matters to the distill pass
            config = DistillConfig(width=STUDENT_WIDTH / width, temperature=4.0, alpha=0.9, epochs=args.epochs,
                                   lr=LR, seed=s, max_stage_ratio=None)
            one.append(distill(teacher, student(s), train, config, test).student_top1)
            result = distill(teacher, student(s), train, dataclasses.replace(config, max_stage_ratio=3.0), test)
            progressive.append(result.student_top1)
            stages = len(result.stages)
            config = dataclasses.replace(config, alpha=1.0, epochs=SCARCE_EPOCHS)
            no_labels.append(distill(teacher, student(s), unlabelled, config, test).student_top1)
        rows.append((width, sum(p.numel() for p in teacher.parameters()), evaluate(teacher, test), one,
                     progressive, stages, no_labels))

    print(f"\nStudent DigitsCNN(width={STUDENT_WIDTH}), {student_params:,} params; held-out top-1 (%) over "
          f"{args.seeds} seeds; {args.epochs} epochs with all labels, lr {LR}\n")
    print("| teacher width | teacher params | teacher top-1 | KD, all labels | KD progressive (stages) "
          "| scratch, all labels | KD, teacher labels all inputs | scratch, 100 labels |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    for width, params, acc, one, progressive, stages, no_labels in rows:
        print(f"| {width} | {params:,} | {acc * 100:.1f} | {cell(one)} | {cell(progressive)} ({stages}) | "
              f"{cell(scratch)} | {cell(no_labels)} | {cell(scarce)} |")
    print(f"\n{time.perf_counter() - started:.0f} s in all")


if __name__ == "__main__":
    main(sys.argv[1:])
