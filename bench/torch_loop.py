"""A plain PyTorch training loop over the reference modules, as the original
scripts trained them: DataLoader with shuffling, ToTensor-style scaling per
batch, cross-entropy, Adam or SGD, the test set evaluated after every epoch.

It is the yardstick of the benchmarks (`bench/throughput.py`) and of the
reproduction runs (`python -m bench.train_reference`): what a user would write
without keras-cifar.
"""

import os
import time

import numpy as np
import torch

from bench import reference
from keras_cifar.train.callbacks import write_metrics_csv


def make_loader(split, batch_size, shuffle, seed=0):
    dataset = torch.utils.data.TensorDataset(torch.as_tensor(split.images), torch.as_tensor(split.labels))
    generator = torch.Generator().manual_seed(seed)
    return torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, generator=generator)


def make_optimizer(module, optimizer, lr, momentum=0.0):
    if optimizer == "adam":
        return torch.optim.Adam(module.parameters(), lr=lr)
    if optimizer == "sgd":
        return torch.optim.SGD(module.parameters(), lr=lr, momentum=momentum)
    raise ValueError(f"The reference loop knows adam and sgd. Received: optimizer={optimizer!r}")


class ReferenceRun:
    """One model, optimizer and loss; `train_step` and `evaluate` as the originals wrote them."""

    def __init__(self, name, num_classes=10, optimizer="adam", lr=1e-3, momentum=0.0, resize_to="default",
                 device="cpu", seed=0):
        torch.manual_seed(seed)
        self.name = name
        self.resize_to = resize_to
        self.device = torch.device(device)
        self.module = reference.create_reference(name, num_classes).to(self.device)
        self.optimizer = make_optimizer(self.module, optimizer, lr, momentum)
        self.loss_fn = torch.nn.CrossEntropyLoss()

    def prepare(self, images):
        return reference.preprocess_nchw(images, self.name, self.resize_to).to(self.device)

    def train_step(self, images, labels):
        """-> (summed loss as a float, correct predictions): `.item()` per step, as the originals did."""
        self.module.train()
        labels = labels.to(self.device)
        self.optimizer.zero_grad()
        outputs = self.module(self.prepare(images))
        loss = self.loss_fn(outputs, labels)
        loss.backward()
        self.optimizer.step()
        return loss.item(), (outputs.argmax(1) == labels).sum().item()

    @torch.no_grad()
    def evaluate(self, loader):
        self.module.eval()
        correct = total = 0
        loss_sum = 0.0
        for images, labels in loader:
            labels = labels.to(self.device)
            outputs = self.module(self.prepare(images))
            loss_sum += self.loss_fn(outputs, labels).item() * len(labels)
            correct += (outputs.argmax(1) == labels).sum().item()
            total += len(labels)
        return loss_sum / total, correct / total


def nudge_weights(module, seed=0, scale=1e-7):
    """Multiplies every weight by (1 + scale * noise): about one float32 ulp at the default, to
    show how far rounding alone carries two runs of the same code apart (bench/divergence.py)."""
    noise = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in module.parameters():
            parameter.mul_(1 + scale * torch.randn(parameter.shape, generator=noise))
    return module


def train_reference(name, data, epochs, batch_size, lr, optimizer="adam", momentum=0.0, seed=0, out_dir=None,
                    resize_to="default", max_steps=None, log=print):
    """Trains the reference module of `name`; writes `metrics.csv` like a keras-cifar run."""
    run = ReferenceRun(name, data.num_classes, optimizer, lr, momentum, resize_to, seed=seed)
    train_loader = make_loader(data.train, batch_size, shuffle=True, seed=seed)
    test_loader = make_loader(data.test, 500, shuffle=False)
    history = []
    if out_dir:
        os.makedirs(out_dir, exist_ok=True)
    steps = 0
    for epoch in range(1, epochs + 1):
        start = time.perf_counter()
        loss_sum, correct, seen, batches = 0.0, 0, 0, 0
        for images, labels in train_loader:
            loss, right = run.train_step(images, labels)
            loss_sum += loss
            correct += right
            seen += len(labels)
            batches += 1
            steps += 1
            if max_steps and steps >= max_steps:
                break
        elapsed = time.perf_counter() - start
        test_loss, test_accuracy = run.evaluate(test_loader)
        row = {"epoch": epoch, "loss": loss_sum / batches, "accuracy": correct / seen, "val_loss": test_loss,
               "val_accuracy": test_accuracy, "learning_rate": lr, "epoch_time_s": elapsed}
        history.append(row)
        log(f"epoch {epoch}/{epochs}: loss {row['loss']:.4f} (sum {loss_sum:.1f}), train {100 * row['accuracy']:.2f}%, "
            f"test {100 * test_accuracy:.2f}%, {elapsed:.1f} s")
        if out_dir:
            write_metrics_csv(os.path.join(out_dir, "metrics.csv"), history)
        if max_steps and steps >= max_steps:
            break
    return history


def final_and_best(history):
    accuracies = [row["val_accuracy"] for row in history]
    return accuracies[-1], max(accuracies), int(np.argmax(accuracies)) + 1
