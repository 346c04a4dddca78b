"""Does the Keras port train like the PyTorch original beyond rounding noise?

Three copies of a model start from the same PyTorch-initialised weights and take the same steps on
the same real batches with the original recipe (Adam, lr 1e-3, no augmentation):
  - `torch`: the PyTorch original (pytorch_reference.originals) with torch.optim.Adam;
  - `torch+ulp`: the same, its weights first multiplied by (1 + 1e-7 * noise), about one float32 ulp:
    how far rounding alone carries two runs of the same code apart;
  - `keras`: the Keras port as `fit` trains it (graph capture, TorchAdam), weights copied from `torch`.
At each checkpoint it prints, against `torch`, the relative distance of the test logits and the share
of test images whose predicted class differs, plus each copy's test accuracy. If the port had a
systematic difference, `keras` would move away from `torch` faster than `torch+ulp` does.

    python -m bench.divergence --model resnet_lite --data ../shared/data/cifar10-jpeg.tar.gz --epochs 1
"""

import time

import click
import numpy as np

import keras_cifar  # noqa: F401  (backend first)
import keras
import torch

from pytorch_reference.torch_loop import ReferenceRun, nudge_weights
from keras_cifar.data import load_cifar
from keras_cifar.models.convert import copy_torch_weights
from keras_cifar.train.config import resolve_config
from keras_cifar.train.trainer import build_model, compile_model


def torch_logits(run, images, batch=500):
    run.module.eval()
    with torch.no_grad():
        return torch.cat([run.module(run.prepare(images[i:i + batch])) for i in range(0, len(images), batch)])


def keras_logits(model, images, batch=500):
    return torch.cat([torch.as_tensor(keras.ops.convert_to_numpy(model(images[i:i + batch], training=False)))
                      for i in range(0, len(images), batch)])


def diverge(model_name, dataset, total_steps, test_images=2000, checkpoints=8, seed=0):
    """Trains the three copies side by side; yields one dict per report step (see the module doc)."""
    config = resolve_config(None, {"model": model_name, "seed": seed})
    train_x, train_y = torch.as_tensor(dataset.train.images), torch.as_tensor(dataset.train.labels).long()
    subset = np.random.default_rng(seed).permutation(len(dataset.test.labels))[:test_images]  # splits are class-sorted
    test_x = torch.as_tensor(dataset.test.images[subset])
    test_y = torch.as_tensor(dataset.test.labels[subset]).long()

    reference = ReferenceRun(model_name, dataset.num_classes, lr=config.lr, seed=seed)
    perturbed = ReferenceRun(model_name, dataset.num_classes, lr=config.lr, seed=seed)
    perturbed.module.load_state_dict(reference.module.state_dict())
    nudge_weights(perturbed.module, seed + 1)
    model = build_model(config, dataset.num_classes)
    copy_torch_weights(model, reference.module)
    steps_per_epoch = -(-len(train_x) // config.batch_size)
    compile_model(model, config, steps_per_epoch)
    model.set_graph_capture(config.jit in ("trace", "trace-fused"), fused=config.jit == "trace-fused")

    report_at = {int(s) for s in np.geomspace(1, max(total_steps, 1), checkpoints)} | {0, total_steps}
    order = torch.randperm(len(train_x), generator=torch.Generator().manual_seed(seed))
    for step in range(total_steps + 1):
        if step in report_at:
            logits = {"torch": torch_logits(reference, test_x), "torch+ulp": torch_logits(perturbed, test_x),
                      "keras": keras_logits(model, test_x)}
            base = logits["torch"]
            yield {
                "step": step, "batch_size": config.batch_size, "lr": config.lr, "test_images": len(test_x),
                "distance": {k: float((v - base).norm() / base.norm()) for k, v in logits.items()},
                "differ": {k: float((v.argmax(1) != base.argmax(1)).float().mean()) for k, v in logits.items()},
                "accuracy": {k: float((v.argmax(1) == test_y).float().mean()) for k, v in logits.items()},
            }
        if step == total_steps:
            return
        position = (step % steps_per_epoch) * config.batch_size
        if step and step % steps_per_epoch == 0:
            order = torch.randperm(len(train_x), generator=torch.Generator().manual_seed(seed + step))
        batch = order[position:position + config.batch_size]
        images, labels = train_x[batch], train_y[batch]
        reference.train_step(images, labels)
        perturbed.train_step(images, labels)
        model.train_on_batch(images, labels)


@click.command()
@click.option("--model", "model_name", default="resnet_lite", show_default=True)
@click.option("--data", default="cifar10", show_default=True)
@click.option("--data-dir", default=None, help="Where TFDS prepares and caches data.")
@click.option("--epochs", type=float, default=1.0, show_default=True, help="Training length in epochs.")
@click.option("--test-images", type=int, default=2000, show_default=True)
@click.option("--checkpoints", type=int, default=8, show_default=True, help="Log-spaced report points.")
@click.option("--seed", type=int, default=0, show_default=True)
def main(model_name, data, data_dir, epochs, test_images, checkpoints, seed):
    dataset = load_cifar(data, data_dir)
    batch_size = resolve_config(None, {"model": model_name}).batch_size
    total_steps = int(epochs * -(-len(dataset.train.labels) // batch_size))
    started = time.perf_counter()
    for row in diverge(model_name, dataset, total_steps, test_images, checkpoints, seed):
        if row["step"] == 0:
            print(f"{model_name}: {total_steps} steps of {row['batch_size']} images, lr {row['lr']}, "
                  f"{row['test_images']} test images; distances against `torch`")
            print("| step | logits distance keras | logits distance torch+ulp | predictions differ keras | "
                  "predictions differ torch+ulp | test acc torch / torch+ulp / keras |")
            print("|---|---|---|---|---|---|")
        distance, differ, accuracy = row["distance"], row["differ"], row["accuracy"]
        print(f"| {row['step']} | {distance['keras']:.2e} | {distance['torch+ulp']:.2e} | "
              f"{100 * differ['keras']:.1f}% | {100 * differ['torch+ulp']:.1f}% | {100 * accuracy['torch']:.1f}% / "
              f"{100 * accuracy['torch+ulp']:.1f}% / {100 * accuracy['keras']:.1f}% |", flush=True)
    print(f"({time.perf_counter() - started:.0f} s)")


if __name__ == "__main__":
    main()
