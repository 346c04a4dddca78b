"""Kernel-launching aten ops per training and evaluation step: keras-cifar against a tidy PyTorch loop.

On a GPU the zoo's networks are small enough that a step is bound by kernel launches, so its
speed follows the number of ops it dispatches; that number is the same on a CPU, where this
counts it (`pytorch_reference.op_count`: the ops left out, exactly, are listed under the table).
keras-cifar's steps run as `fit` runs them, each model with its config (`configs/<model>.yaml`),
googlenet and resnet18 at `--resize-to 32` (the same ops as at 224). The yardsticks are fed the
same raw uint8 NHWC batches, preprocess each batch and sum the loss and accuracy on the device:
the PyTorch originals with torch.optim's fused optimizer for the zoo, airbench's own programs
for the airbench nets (their lookahead steps counted apart). Where the two differ, the ops that
differ are listed by name (keras-cifar's count / the yardstick's).

    python -m bench.ops_per_step
    python -m bench.ops_per_step --models cnn,airbench94 --precisions none,bf16
"""

import sys

import click

from pytorch_reference import op_count


def rows_for(model, precision, batch_size):
    ours = op_count.keras_cifar_counts(model, precision, batch_size)
    theirs = op_count.yardstick_counts(model, precision, batch_size)
    rows = []
    for kind in ours:
        a, b = ours[kind], theirs.get(kind, op_count.KernelOpCounter())
        differing = sorted(op for op in set(a.ops) | set(b.ops) if a.ops[op] != b.ops[op])
        rows.append({"model": model, "precision": precision, "step": kind, "ours": a.total, "theirs": b.total,
                     "differ": ", ".join(f"{op} {a.ops[op]}/{b.ops[op]}" for op in differing)})
    return rows


def print_table(rows):
    print("\nKernel-launching aten ops per step, batch of raw uint8 images (keras-cifar / yardstick: <= 1 is as lean)")
    print("| model | precision | step | keras-cifar | yardstick | ratio | ops that differ (keras-cifar/yardstick) |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        ratio = f"{r['ours'] / r['theirs']:.2f}" if r["theirs"] else "(none)"
        print(f"| {r['model']} | {r['precision']} | {r['step']} | {r['ours']} | {r['theirs']} | "
              f"{ratio} | {r['differ']} |", flush=True)
    print("\nLeft out (they launch no kernel): every view op (OpOverload.is_view), and "
          + "; ".join(f"{name}: {why}" for name, why in op_count.EXCLUDED.items()) + ".")
    print("fit's batch hooks: the run's callbacks around each training step (the NaN guard's record on the "
          "device); the yardstick has none (it reads its loss back to the host instead, or not at all).")
    print("Equivalent ops with other names (convolution and _convolution: the captured graph calls the "
          "inner one) differ by name only.")


@click.command()
@click.option("--models", default=",".join(op_count.ZOO + op_count.AIRBENCH), show_default=True)
@click.option("--precisions", default="none,bf16", show_default=True,
              help="Mixed precision settings: none (float32), bf16 (the yardstick under torch.autocast(bfloat16)).")
@click.option("--batch-size", type=int, default=32, show_default=True)
def main(models, precisions, batch_size):
    rows = []
    for model in models.split(","):
        for precision in precisions.split(","):
            print(f"{model} ({precision}) ...", file=sys.stderr, flush=True)
            rows += rows_for(model, precision, batch_size)
    print_table(rows)


if __name__ == "__main__":
    main()
