"""What it is worth that a frozen variable stops requiring gradients: the training step of the
fast recipes with `airbench94`'s whitening bias taking a gradient (epochs 1-3) and not (after its
freeze step, where `TorchSGD` turns `requires_grad` off and the backward pass skips the first
layer and block1's input gradient, as airbench's `bias.detach()`).

    python -m bench.frozen_gradient --recipe muon --rounds 3    # configs/airbench94_muon.yaml, batch 2000
    python -m bench.frozen_gradient --recipe airbench94          # configs/airbench94.yaml, batch 1024

One process, the recipe's model, optimizer and precision, one synthetic batch (the step's cost
does not depend on pixel values); after one warm-up step each, `--rounds` rounds of `--steps`
steps per variant, the order reversed in every other round. The table gives the median seconds
per step.
"""

import argparse
import statistics
import time

import numpy as np

import keras_cifar  # noqa: F401  (selects Keras's torch backend before keras is imported)

CONFIGS = {"airbench94": "airbench94.yaml", "muon": "airbench94_muon.yaml"}
TRAIN_IMAGES = 50000  # CIFAR-10's training split: sets the schedule's length only


def measure(model, images, labels, rounds, steps):
    """-> {"gradient": [s per step], "no gradient": [...]}: the whitening bias's `requires_grad`
    on and off, in turns."""
    bias = model.get_layer("whiten").bias.value
    variants = {"gradient": True, "no gradient": False}
    for flag in variants.values():  # warm-up: graph capture, allocator
        bias.requires_grad_(flag)
        model.train_on_batch(images, labels)
    times = {name: [] for name in variants}
    for round_index in range(rounds):
        order = list(variants) if round_index % 2 == 0 else list(variants)[::-1]
        for name in order:
            bias.requires_grad_(variants[name])
            for _ in range(steps):
                started = time.perf_counter()
                model.train_on_batch(images, labels)
                times[name].append(time.perf_counter() - started)
    bias.requires_grad_(True)
    return times


def table(times, batch_size):
    with_gradient = statistics.median(times["gradient"])
    lines = ["| whitening bias | s per step (median) | images/s | against taking a gradient |", "|---|---|---|---|"]
    for name, seconds in times.items():
        median = statistics.median(seconds)
        lines.append(f"| {name} | {median:.3f} | {batch_size / median:.0f} | {median / with_gradient:.3f} |")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--recipe", default="muon", choices=sorted(CONFIGS))
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=2, help="timed steps per variant and round")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    if args.rounds < 1 or args.steps < 1:
        parser.error(f"--rounds and --steps must be >= 1. Received: --rounds {args.rounds}, --steps {args.steps}")

    import torch

    from keras_cifar.train.config import configs_dir, resolve_config
    from keras_cifar.train.device import set_precision
    from keras_cifar.losses import build_loss
    from keras_cifar.optim import build_optimizer
    from keras_cifar.train.trainer import build_model

    torch.set_num_threads(args.threads)
    config = resolve_config(str(configs_dir() / CONFIGS[args.recipe]), {})
    set_precision(config.mixed_precision, "cpu")
    model = build_model(config, num_classes=10)
    steps_per_epoch = TRAIN_IMAGES // config.batch_size  # the recipes drop the last partial batch
    model.compile(optimizer=build_optimizer(config, steps_per_epoch, model), loss=build_loss(config),
                  metrics=["accuracy"])
    model.set_graph_capture(True)
    rng = np.random.default_rng(0)
    images = torch.as_tensor(rng.integers(0, 256, (config.batch_size, 32, 32, 3), dtype=np.uint8))
    labels = torch.as_tensor(rng.integers(0, 10, config.batch_size))
    times = measure(model, images, labels, args.rounds, args.steps)
    print(f"{CONFIGS[args.recipe]}: batch {config.batch_size}, {config.mixed_precision}, "
          f"{torch.get_num_threads()} threads")
    print(table(times, config.batch_size))
    return times


if __name__ == "__main__":
    main()
