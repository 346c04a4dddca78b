"""A plain PyTorch training loop over the reference modules, as the original
scripts trained them: DataLoader with shuffling, ToTensor-style scaling per
batch, cross-entropy, Adam or SGD, the test set evaluated after every epoch.

It is the yardstick of the benchmarks (`bench/throughput.py`) and of the
reproduction runs (`python -m pytorch_reference.train_reference`): what a user would write
without keras-cifar.
"""

import os
import time

import numpy as np
import torch

from keras_cifar.train.commit import write_metrics_csv
from pytorch_reference import originals as reference


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
    show how far rounding alone carries two runs of the same code apart (docs/RESULTS-LOG.md, the divergence study)."""
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


class TidyRun:
    """What a careful PyTorch user writes, the yardstick of the speed benchmarks: the data as
    one preprocessed tensor on the device (32x32 models; the 224x224 ones upscale each batch),
    batches by indexing a permutation, the network in `memory_format`, torch's Adam or SGD in
    its `implementation` ("fused" or "foreach"), cross-entropy, `loss.item()` every step, and
    the test set evaluated every epoch under `no_grad` in batches of `eval_batch_size`."""

    def __init__(self, name, train, test, batch_size, optimizer="adam", lr=1e-3, momentum=0.0,
                 memory_format="channels_last", implementation="fused", eval_batch_size=500, device="cpu",
                 resize_to="default", num_classes=10, seed=0):
        torch.manual_seed(seed)
        self.name, self.resize_to, self.batch_size, self.eval_batch_size = name, resize_to, batch_size, eval_batch_size
        self.device = torch.device(device)
        self.memory_format = getattr(torch, memory_format) if memory_format != "contiguous" else torch.contiguous_format
        self.module = reference.create_reference(name, num_classes).to(self.device, memory_format=self.memory_format)
        self.implementation = implementation
        options = {implementation: True}
        if optimizer == "adam":
            self.optimizer = torch.optim.Adam(self.module.parameters(), lr=lr, **options)
        else:
            self.optimizer = torch.optim.SGD(self.module.parameters(), lr=lr, momentum=momentum, **options)
        self.loss_fn = torch.nn.CrossEntropyLoss()
        upscale = reference.REFERENCES[name][2] if resize_to == "default" else resize_to
        self.per_batch = bool(upscale)  # 224x224 inputs do not fit in memory as one tensor
        self.train_x, self.train_y = self._tensors(train)
        self.test_x, self.test_y = self._tensors(test)
        self.epoch = 0

    def _tensors(self, split):
        images = torch.as_tensor(split.images)
        x = images.to(self.device) if self.per_batch else self._prepare(images.to(self.device))
        return x, torch.as_tensor(split.labels).to(self.device)

    def _prepare(self, images):
        return reference.preprocess_nchw(images, self.name, self.resize_to).contiguous(
            memory_format=self.memory_format)

    def _batch(self, x, index):
        return self._prepare(x[index]) if self.per_batch else x[index]

    def train_epoch(self, max_steps=None):
        """-> (mean loss, train accuracy) of one epoch."""
        self.module.train()
        generator = torch.Generator().manual_seed(self.epoch)
        order = torch.randperm(len(self.train_y), generator=generator).to(self.device)
        loss_sum, correct, steps = 0.0, 0, 0
        for start in range(0, len(order), self.batch_size):
            index = order[start:start + self.batch_size]
            labels = self.train_y[index]
            outputs = self.module(self._batch(self.train_x, index))
            loss = self.loss_fn(outputs, labels)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            loss_sum += loss.item()
            correct += (outputs.argmax(1) == labels).sum()
            steps += 1
            if max_steps and steps >= max_steps:
                break
        self.epoch += 1
        return loss_sum / steps, int(correct) / min(len(order), steps * self.batch_size)

    @torch.no_grad()
    def evaluate(self):
        """-> (mean loss, accuracy) on the test tensors."""
        self.module.eval()
        loss_sum, correct = 0.0, 0
        for start in range(0, len(self.test_y), self.eval_batch_size):
            index = torch.arange(start, min(start + self.eval_batch_size, len(self.test_y)), device=self.device)
            labels = self.test_y[index]
            outputs = self.module(self._batch(self.test_x, index))
            loss_sum += self.loss_fn(outputs, labels).item() * len(labels)
            correct += (outputs.argmax(1) == labels).sum().item()
        return loss_sum / len(self.test_y), correct / len(self.test_y)


def fastest_tidy_run(name, train, test, batch_size, optimizer, lr, momentum=0.0, device="cpu", probe_steps=30,
                     **options):
    """A TidyRun in whichever memory format and optimizer implementation trains fastest here,
    timed on `probe_steps` steps of each (after 5 warm-up steps)."""
    best = None
    for memory_format in ("channels_last", "contiguous"):
        for implementation in ("fused", "foreach"):
            run = TidyRun(name, train, test, batch_size, optimizer, lr, momentum, memory_format=memory_format,
                          implementation=implementation, device=device, **options)
            run.train_epoch(max_steps=5)
            start = time.perf_counter()
            run.train_epoch(max_steps=probe_steps)
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            seconds = time.perf_counter() - start
            if best is None or seconds < best[0]:
                best = (seconds, memory_format, implementation)
    return TidyRun(name, train, test, batch_size, optimizer, lr, momentum, memory_format=best[1],
                   implementation=best[2], device=device, **options)
