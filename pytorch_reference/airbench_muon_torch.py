"""airbench94_muon in plain PyTorch on the project's real CIFAR-10: the reference row for
configs/airbench94_muon.yaml (airbench94's network, trained 8 epochs with the Muon optimizer; 94.01%
in 2.59 s on an A100, on the original CIFAR-10).

    python -m pytorch_reference.airbench_muon_torch --device cpu --threads 2 --precision bf16 --out muon_cpu.json
    python -m pytorch_reference.airbench_muon_torch --train-images 2048 --test-images 1000 --epochs 1   # smoke run
    python -m pytorch_reference.airbench_muon_torch --whiten-bias zeros ...   # its whitening bias starts at 0, as airbench94's

Adapted from KellerJordan/cifar10-airbench, airbench94_muon.py
(https://github.com/KellerJordan/cifar10-airbench), MIT licence, Copyright (c) 2024 Keller Jordan.
The Muon optimizer, the Newton-Schulz iteration, the network (head scaled to unit std, logits
/ 256), the hyperparameters, param groups, linear schedules, augmentation and TTA are its lines.
What changed is what pytorch_reference/airbench_torch.py changes for airbench94 (its loader, evaluation,
timing, report and command line are reused from there), and the Newton-Schulz iteration's
precision is a class attribute (`Muon.ns_dtype`, bfloat16 as airbench's) so that tests can
compare two implementations in float32, where bfloat16's rounding would not cancel: device and precision are choices
(bf16 autocast on the CPU; airbench94_muon's network in .half() needs CUDA), the data is
`load_cifar`'s, one run per call with no warm-up run and no `torch.compile` (neither of the
network nor of the Newton-Schulz iteration), and the per-epoch test evaluation is not timed.
"""

import time
from math import ceil

import torch
import torch.nn.functional as F
from torch import nn

from pytorch_reference import airbench_torch as ab

BATCH_SIZE = 2000
BIAS_LR = 0.053
HEAD_LR = 0.67
WD = 2e-6 * BATCH_SIZE
EPOCHS = 8
WHITEN_BIAS_EPOCHS = 3
TTA_LEVEL = 2


def zeropower_via_newtonschulz5(G, steps=3, eps=1e-7, dtype=torch.bfloat16):
    assert len(G.shape) == 2
    a, b, c = (3.4445, -4.7750,  2.0315)
    X = G.to(dtype)
    X /= (X.norm() + eps) # ensure top singular value <= 1
    if G.size(0) > G.size(1):
        X = X.T
    for _ in range(steps):
        A = X @ X.T
        B = b * A + c * A @ A
        X = a * X + B @ X
    if G.size(0) > G.size(1):
        X = X.T
    return X


class Muon(torch.optim.Optimizer):
    ns_dtype = torch.bfloat16  # airbench's; tests set float32 to compare update by update

    def __init__(self, params, lr=1e-3, momentum=0, nesterov=False):
        if lr < 0.0:
            raise ValueError(f"Invalid learning rate: {lr}")
        if momentum < 0.0:
            raise ValueError(f"Invalid momentum value: {momentum}")
        if nesterov and momentum <= 0:
            raise ValueError("Nesterov momentum requires a momentum")
        defaults = dict(lr=lr, momentum=momentum, nesterov=nesterov)
        super().__init__(params, defaults)

    def step(self):
        for group in self.param_groups:
            lr = group["lr"]
            momentum = group["momentum"]
            for p in group["params"]:
                g = p.grad
                if g is None:
                    continue
                state = self.state[p]

                if "momentum_buffer" not in state.keys():
                    state["momentum_buffer"] = torch.zeros_like(g)
                buf = state["momentum_buffer"]
                buf.mul_(momentum).add_(g)
                g = g.add(buf, alpha=momentum) if group["nesterov"] else buf

                p.data.mul_(len(p.data)**0.5 / p.data.norm()) # normalize the weight
                update = zeropower_via_newtonschulz5(g.reshape(len(g), -1), dtype=self.ns_dtype).view(g.shape) # whiten the update
                p.data.add_(update, alpha=-lr) # take a step


class CifarNet(nn.Module):
    def __init__(self, widths=(64, 256, 256)):
        super().__init__()
        whiten_kernel_size = 2
        whiten_width = 2 * 3 * whiten_kernel_size**2
        self.whiten = nn.Conv2d(3, whiten_width, whiten_kernel_size, padding=0, bias=True)
        self.whiten.weight.requires_grad = False
        self.layers = nn.Sequential(
            nn.GELU(),
            ab.ConvGroup(whiten_width, widths[0], 0.6),
            ab.ConvGroup(widths[0], widths[1], 0.6),
            ab.ConvGroup(widths[1], widths[2], 0.6),
            nn.MaxPool2d(3),
        )
        self.head = nn.Linear(widths[2], 10, bias=False)

    def reset(self):
        for m in self.modules():
            if type(m) in (nn.Conv2d, ab.Conv, ab.BatchNorm, nn.Linear):
                m.reset_parameters()
        w = self.head.weight.data
        w *= 1 / w.std()

    def init_whiten(self, train_images, eps=5e-4):
        ab.init_whitening_conv(self.whiten, train_images, eps)

    def forward(self, x, whiten_bias_grad=True):
        b = self.whiten.bias
        x = F.conv2d(x, self.whiten.weight, b if whiten_bias_grad else b.detach())
        x = self.layers(x)
        x = x.view(len(x), -1)
        return self.head(x) / x.size(-1)


def new_model(device, memory_format, precision, whiten_bias="uniform"):
    """airbench94_muon's CifarNet after `reset()`; `whiten_bias="zeros"` then zeroes the whitening
    bias, as airbench94 starts it (the --whiten-bias check of the two recipes' difference)."""
    model = CifarNet().to(device, memory_format=memory_format)
    if precision == "fp16":  # airbench94_muon's own path: the network in half, BatchNorm in float
        for mod in model.modules():
            (mod.float() if isinstance(mod, ab.BatchNorm) else mod.half())
    model.reset()
    if whiten_bias == "zeros":
        model.whiten.bias.data.zero_()
    return model


def make_optimizers(model, batch_size=BATCH_SIZE, bias_lr=BIAS_LR, head_lr=HEAD_LR):
    """airbench94_muon's two optimizers (summed loss over the batch)."""
    wd = 2e-6 * batch_size
    filter_params = [p for p in model.parameters() if len(p.shape) == 4 and p.requires_grad]
    norm_biases = [p for n, p in model.named_parameters() if "norm" in n and p.requires_grad]
    param_configs = [dict(params=[model.whiten.bias], lr=bias_lr, weight_decay=wd/bias_lr),
                     dict(params=norm_biases,         lr=bias_lr, weight_decay=wd/bias_lr),
                     dict(params=[model.head.weight], lr=head_lr, weight_decay=wd/head_lr)]
    optimizer1 = torch.optim.SGD(param_configs, momentum=0.85, nesterov=True)
    optimizer2 = Muon(filter_params, lr=0.24, momentum=0.6, nesterov=True)
    optimizers = [optimizer1, optimizer2]
    for opt in optimizers:
        for group in opt.param_groups:
            group["initial_lr"] = group["lr"]
    return optimizers


def train_step(model, optimizers, inputs, labels, step, total_train_steps, whiten_bias_train_steps, autocast):
    """One step of airbench94_muon's loop; -> (outputs, summed loss)."""
    optimizer1, optimizer2 = optimizers
    with autocast():
        outputs = model(inputs, whiten_bias_grad=(step < whiten_bias_train_steps))
        loss = F.cross_entropy(outputs, labels, label_smoothing=0.2, reduction="sum")
    loss.backward()
    for group in optimizer1.param_groups[:1]:
        group["lr"] = group["initial_lr"] * (1 - step / whiten_bias_train_steps)
    for group in optimizer1.param_groups[1:]+optimizer2.param_groups:
        group["lr"] = group["initial_lr"] * (1 - step / total_train_steps)
    for opt in optimizers:
        opt.step()
    model.zero_grad(set_to_none=True)
    return outputs, loss


def train(args, data, log=print):
    """One airbench94_muon run; -> the report (also written to `args.out` after every epoch)."""
    device = torch.device(args.device)
    precision = ab.pick_precision(args.precision, device)
    memory_format = torch.channels_last if args.memory_format == "channels_last" else torch.contiguous_format
    if device.type == "cpu":
        torch.set_num_threads(args.threads)
    torch.backends.cudnn.benchmark = True
    torch.manual_seed(args.seed)
    autocast = ab.autocast_for(precision, device)
    data_dtype = torch.half if precision == "fp16" else torch.float32

    batch_size = args.batch_size or BATCH_SIZE
    epochs = args.epochs if args.epochs is not None else EPOCHS
    test_loader = ab.CifarLoader(data.test, device, data_dtype, memory_format, train=False, batch_size=2000)
    train_loader = ab.CifarLoader(data.train, device, data_dtype, memory_format, train=True,
                                  batch_size=batch_size, aug=dict(flip=True, translate=2))
    total_train_steps = ceil(epochs * len(train_loader))
    whiten_bias_train_steps = ceil(WHITEN_BIAS_EPOCHS * len(train_loader))
    if total_train_steps < 1:
        raise SystemExit(f"{len(data.train)} training images make no step of batch {batch_size} in {epochs} epochs.")

    model = new_model(device, memory_format, precision, args.whiten_bias)
    optimizers = make_optimizers(model, batch_size)
    step = 0

    report = {
        "config": {**{k: v for k, v in vars(args).items() if k != "out"}, "program": "airbench94_muon",
                   "precision": precision, "batch_size": batch_size, "epochs": epochs,
                   "total_train_steps": total_train_steps, "train_images": len(data.train),
                   "test_images": len(data.test), "data_source": data.source,
                   "autocast": "bf16" if precision == "bf16" else None},
        "machine": ab.machine_info(device),
        "whiten_init_s": None, "epochs": [], "tta_acc": None, "tta_time_s": None, "total_time_s": None,
        "time_to_90": None, "time_to_94": None, "finished": False,
    }
    wall_start = time.perf_counter()

    start = ab.clock(device)
    # every 10th image: this copy is sorted by class (airbench takes torchvision's first 5000)
    stride = max(len(train_loader.images) // 5000, 1)
    model.init_whiten(train_loader.normalize(train_loader.images[::stride][:5000]))
    total_time_seconds = report["whiten_init_s"] = ab.clock(device) - start
    log(f"airbench94_muon on {device} ({precision}, {args.memory_format}, {torch.get_num_threads()} threads): "
        f"{len(data.train)} train / {len(data.test)} test images, {total_train_steps} steps of {batch_size}; "
        f"whitening init {report['whiten_init_s']:.3f} s")
    ab.print_header(log)

    for epoch in range(ceil(total_train_steps / len(train_loader))):
        start = ab.clock(device)
        steps_before = step
        model.train()
        for inputs, labels in train_loader:
            outputs, loss = train_step(model, optimizers, inputs, labels, step, total_train_steps,
                                       whiten_bias_train_steps, autocast)
            step += 1
            if step >= total_train_steps:
                break
        epoch_time = ab.clock(device) - start
        total_time_seconds += epoch_time

        train_acc = (outputs.detach().argmax(1) == labels).float().mean().item()
        train_loss = loss.item() / len(labels)
        eval_start = time.perf_counter()
        val_acc = ab.evaluate(model, test_loader, tta_level=0, autocast=autocast)
        row = {"epoch": epoch + 1, "steps": step - steps_before, "train_time_s": epoch_time,
               "cumulative_train_s": total_time_seconds, "test_acc": val_acc, "train_loss": train_loss,
               "train_acc": train_acc, "eval_time_s": time.perf_counter() - eval_start}
        report["epochs"].append(row)
        report["time_to_90"] = ab.time_to(0.90, report["epochs"])
        report["time_to_94"] = ab.time_to(0.94, report["epochs"])
        report["wall_time_s"] = time.perf_counter() - wall_start
        ab.write_json(args.out, report)
        ab.print_row(row, log)

    start = ab.clock(device)
    tta_val_acc = ab.evaluate(model, test_loader, tta_level=TTA_LEVEL, autocast=autocast)
    tta_time = ab.clock(device) - start
    total_time_seconds += tta_time
    report.update(tta_acc=tta_val_acc, tta_time_s=tta_time, total_time_s=total_time_seconds,
                  time_to_90=ab.time_to(0.90, report["epochs"], tta_val_acc, tta_time),
                  time_to_94=ab.time_to(0.94, report["epochs"], tta_val_acc, tta_time),
                  wall_time_s=time.perf_counter() - wall_start, finished=True)
    ab.write_json(args.out, report)
    log(f"TTA (level {TTA_LEVEL}) accuracy {tta_val_acc:.4f} in {tta_time:.2f} s; "
        f"total {total_time_seconds:.2f} s (whitening + training + TTA); time to 94%: "
        f"{'never' if report['time_to_94'] is None else format(report['time_to_94'], '.2f') + ' s'}")
    return report


def add_arguments(parser):
    parser.add_argument("--whiten-bias", default="uniform", choices=["uniform", "zeros"],
                        help="the whitening bias's initial values: uniform (airbench94_muon's: nn.Conv2d's "
                             "default, U(+-1/sqrt(12))) or zeros (airbench94's); default uniform")


def main(argv=None, data=None, log=None):
    """pytorch_reference/airbench_torch.py's flags (and --whiten-bias), data and checks around this program's
    `train`; -> the report."""
    return ab.main(argv, data, log, train_run=train, add_arguments=add_arguments)


if __name__ == "__main__":
    main()
