"""airbench94 in plain PyTorch on the project's real CIFAR-10: the reference row of the
airbench comparison table (the fastest known recipe to 94% on CIFAR-10, written by hand).

Run from the checkout, on the CPU (two threads, bfloat16 autocast) or on CUDA if there is one:

    python -m pytorch_reference.airbench_torch --device cpu --threads 2 --precision bf16 --out airbench_cpu.json
    python -m pytorch_reference.airbench_torch --train-images 2048 --test-images 1000 --epochs 1   # smoke run

It prints one row per epoch and rewrites `--out` after every epoch, so a killed run keeps
what it measured. Timing follows airbench: the whitening init and the training loops count
(`cumulative_train_s`), the per-epoch evaluations without TTA do not, and the final TTA
evaluation is added to make `total_time_s`.

Adapted from KellerJordan/cifar10-airbench, legacy/airbench94.py
(https://github.com/KellerJordan/cifar10-airbench), MIT licence, Copyright (c) 2024 Keller Jordan.
The network, hyperparameters (`hyp`), schedules, optimizer, lookahead, data augmentation
(alternating flip, 2-pixel reflect-padded translation), whitening init and TTA are airbench's.
What changed:
- the device is a choice (`--device cpu|cuda`) and so is the precision: `fp16` is airbench's own
  path (network in .half(), BatchNorm in float32; CUDA only), `bf16` runs forward and loss
  under `torch.autocast(<device>, torch.bfloat16)` with float32 weights, `fp32` runs plain;
  the memory format is a choice too (`--memory-format`), and each epoch's augmented images are
  put in it before batching (airbench's crops come out contiguous while its network is channels_last);
- the data is the project's real CIFAR-10 (`keras_cifar.data.load_cifar`, JPEG-compressed
  images), not torchvision's download; `--train-images`/`--test-images` keep seeded random
  subsets (in order) for smoke runs, since the image folder is sorted by class;
- timing uses time.perf_counter (plus torch.cuda.synchronize on CUDA) instead of CUDA events;
- one run per call (`--seed`) instead of 25, no warmup run, no log.pt; a JSON report instead;
- the loader keeps only the padded images it crops from (airbench also keeps the normalized
  and flipped copies, which it never reads again when translating);
- `--batch-size` and `--epochs` may override hyp for tests and smoke runs (defaults are hyp's);
- `--variant airbench95` runs legacy/airbench95.py instead (95.01% in 10.4 s on an A100): the same
  program with the lines of `hyp` that file changes (`VARIANTS`).
"""

import argparse
import contextlib
import copy
import json
import math
import os
import platform
import time
from math import ceil

import torch
import torch.nn.functional as F
from torch import nn

from keras_cifar.data import load_cifar  # imports keras_cifar first: the torch backend before any tensorflow

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_DATA = os.path.join(os.path.dirname(REPO), "shared", "data", "cifar10-jpeg.tar.gz")

#############################################
#            Setup/Hyperparameters          #
#############################################

hyp = {
    'opt': {
        'train_epochs': 9.9,
        'batch_size': 1024,
        'lr': 11.5,                 # learning rate per 1024 examples
        'momentum': 0.85,
        'weight_decay': 0.0153,     # weight decay per 1024 examples (decoupled from learning rate)
        'bias_scaler': 64.0,        # scales up learning rate (but not weight decay) for BatchNorm biases
        'label_smoothing': 0.2,
        'whiten_bias_epochs': 3,    # how many epochs to train the whitening layer bias before freezing
    },
    'aug': {
        'flip': True,
        'translate': 2,
    },
    'net': {
        'widths': {
            'block1': 64,
            'block2': 256,
            'block3': 256,
        },
        'batchnorm_momentum': 0.6,
        'scaling_factor': 1/9,
        'tta_level': 2,         # the level of test-time augmentation: 0=none, 1=mirror, 2=mirror+translate
    },
}

# legacy/airbench95.py is this file with these lines of hyp changed: wider, a lower learning rate, 15 epochs.
VARIANTS = {
    'airbench94': {},
    'airbench95': {
        'opt': {'train_epochs': 15, 'lr': 10.0},
        'net': {'widths': {'block1': 128, 'block2': 384, 'block3': 384}},
    },
}


@contextlib.contextmanager
def variant(name):
    """`hyp` as the airbench program `name` has it, restored afterwards."""
    saved = copy.deepcopy(hyp)
    for group, values in VARIANTS[name].items():
        hyp[group].update(copy.deepcopy(values))
    try:
        yield
    finally:
        hyp.clear()
        hyp.update(saved)

#############################################
#                DataLoader                 #
#############################################

CIFAR_MEAN = torch.tensor((0.4914, 0.4822, 0.4465))
CIFAR_STD = torch.tensor((0.2470, 0.2435, 0.2616))


def normalize(images):
    """torchvision's T.Normalize(CIFAR_MEAN, CIFAR_STD) on an (N, 3, H, W) batch."""
    mean = CIFAR_MEAN.to(images.device, images.dtype).view(1, 3, 1, 1)
    std = CIFAR_STD.to(images.device, images.dtype).view(1, 3, 1, 1)
    return (images - mean) / std


def batch_flip_lr(inputs):
    flip_mask = (torch.rand(len(inputs), device=inputs.device) < 0.5).view(-1, 1, 1, 1)
    return torch.where(flip_mask, inputs.flip(-1), inputs)


def batch_crop(images, crop_size):
    r = (images.size(-1) - crop_size)//2
    shifts = torch.randint(-r, r+1, size=(len(images), 2), device=images.device)
    images_out = torch.empty((len(images), 3, crop_size, crop_size), device=images.device, dtype=images.dtype)
    # The two cropping methods in this if-else produce equivalent results, but the second is faster for r > 2.
    if r <= 2:
        for sy in range(-r, r+1):
            for sx in range(-r, r+1):
                mask = (shifts[:, 0] == sy) & (shifts[:, 1] == sx)
                images_out[mask] = images[mask, :, r+sy:r+sy+crop_size, r+sx:r+sx+crop_size]
    else:
        images_tmp = torch.empty((len(images), 3, crop_size, crop_size+2*r), device=images.device, dtype=images.dtype)
        for s in range(-r, r+1):
            mask = (shifts[:, 0] == s)
            images_tmp[mask] = images[mask, :, r+s:r+s+crop_size, :]
        for s in range(-r, r+1):
            mask = (shifts[:, 1] == s)
            images_out[mask] = images_tmp[mask, :, :, r+s:r+s+crop_size]
    return images_out


class CifarLoader:
    """airbench's loader over one split of `load_cifar` (uint8 NHWC numpy) instead of a torchvision file."""

    def __init__(self, split, device, dtype, memory_format, train=True, batch_size=500, aug=None, drop_last=None,
                 shuffle=None):
        self.labels = torch.as_tensor(split.labels).to(device)
        images = torch.as_tensor(split.images).to(device)
        # It's faster to load+process uint8 data than to load preprocessed fp16 data
        self.images = (images.to(dtype) / 255).permute(0, 3, 1, 2).contiguous(memory_format=memory_format)
        self.memory_format = memory_format
        self.normalize = normalize
        self.proc_images = {}  # Saved results of image processing to be done on the first epoch
        self.epoch = 0

        self.aug = aug or {}
        for k in self.aug.keys():
            assert k in ['flip', 'translate'], 'Unrecognized key: %s' % k

        self.batch_size = batch_size
        self.drop_last = train if drop_last is None else drop_last
        self.shuffle = train if shuffle is None else shuffle

    def __len__(self):
        return len(self.images)//self.batch_size if self.drop_last else ceil(len(self.images)/self.batch_size)

    def _first_epoch(self):
        images = self.proc_images['norm'] = self.normalize(self.images)
        # Pre-flip images in order to do every-other epoch flipping scheme
        if self.aug.get('flip', False):
            images = self.proc_images['flip'] = batch_flip_lr(images)
        # Pre-pad images to save time when doing random translation
        pad = self.aug.get('translate', 0)
        if pad > 0:
            self.proc_images['pad'] = F.pad(images, (pad,)*4, 'reflect')
            del self.proc_images['norm']  # never read again when translating (saves memory on the CPU)
            self.proc_images.pop('flip', None)

    def __iter__(self):
        if self.epoch == 0:
            self._first_epoch()

        if self.aug.get('translate', 0) > 0:
            images = batch_crop(self.proc_images['pad'], self.images.shape[-2])
        elif self.aug.get('flip', False):
            images = self.proc_images['flip']
        else:
            images = self.proc_images['norm']
        # Flip all images together every other epoch. This increases diversity relative to random flipping
        if self.aug.get('flip', False):
            if self.epoch % 2 == 1:
                images = images.flip(-1)
        images = images.contiguous(memory_format=self.memory_format)  # crops come out contiguous

        self.epoch += 1

        indices = (torch.randperm if self.shuffle else torch.arange)(len(images), device=images.device)
        for i in range(len(self)):
            idxs = indices[i*self.batch_size:(i+1)*self.batch_size]
            yield (images[idxs], self.labels[idxs])

#############################################
#            Network Components             #
#############################################


class Flatten(nn.Module):
    def forward(self, x):
        return x.view(x.size(0), -1)


class Mul(nn.Module):
    def __init__(self, scale):
        super().__init__()
        self.scale = scale

    def forward(self, x):
        return x * self.scale


class BatchNorm(nn.BatchNorm2d):
    def __init__(self, num_features, momentum, eps=1e-12,
                 weight=False, bias=True):
        super().__init__(num_features, eps=eps, momentum=1-momentum)
        self.weight.requires_grad = weight
        self.bias.requires_grad = bias
        # Note that PyTorch already initializes the weights to one and bias to zero


class Conv(nn.Conv2d):
    def __init__(self, in_channels, out_channels, kernel_size=3, padding='same', bias=False):
        super().__init__(in_channels, out_channels, kernel_size=kernel_size, padding=padding, bias=bias)

    def reset_parameters(self):
        super().reset_parameters()
        if self.bias is not None:
            self.bias.data.zero_()
        w = self.weight.data
        torch.nn.init.dirac_(w[:w.size(1)])


class ConvGroup(nn.Module):
    def __init__(self, channels_in, channels_out, batchnorm_momentum):
        super().__init__()
        self.conv1 = Conv(channels_in,  channels_out)
        self.pool = nn.MaxPool2d(2)
        self.norm1 = BatchNorm(channels_out, batchnorm_momentum)
        self.conv2 = Conv(channels_out, channels_out)
        self.norm2 = BatchNorm(channels_out, batchnorm_momentum)
        self.activ = nn.GELU()

    def forward(self, x):
        x = self.conv1(x)
        x = self.pool(x)
        x = self.norm1(x)
        x = self.activ(x)
        x = self.conv2(x)
        x = self.norm2(x)
        x = self.activ(x)
        return x

#############################################
#            Network Definition             #
#############################################


def make_net(device, precision, memory_format):
    widths = hyp['net']['widths']
    batchnorm_momentum = hyp['net']['batchnorm_momentum']
    whiten_kernel_size = 2
    whiten_width = 2 * 3 * whiten_kernel_size**2
    net = nn.Sequential(
        Conv(3, whiten_width, whiten_kernel_size, padding=0, bias=True),
        nn.GELU(),
        ConvGroup(whiten_width,     widths['block1'], batchnorm_momentum),
        ConvGroup(widths['block1'], widths['block2'], batchnorm_momentum),
        ConvGroup(widths['block2'], widths['block3'], batchnorm_momentum),
        nn.MaxPool2d(3),
        Flatten(),
        nn.Linear(widths['block3'], 10, bias=False),
        Mul(hyp['net']['scaling_factor']),
    )
    net[0].weight.requires_grad = False
    if precision == "fp16":  # airbench's own path: the network in half, BatchNorm in float
        net = net.half()
    net = net.to(device, memory_format=memory_format)
    for mod in net.modules():
        if isinstance(mod, BatchNorm):
            mod.float()
    return net

#############################################
#       Whitening Conv Initialization       #
#############################################


def get_patches(x, patch_shape):
    c, (h, w) = x.shape[1], patch_shape
    return x.unfold(2,h,1).unfold(3,w,1).transpose(1,3).reshape(-1,c,h,w).float()


def get_whitening_parameters(patches):
    n,c,h,w = patches.shape
    patches_flat = patches.view(n, -1)
    est_patch_covariance = (patches_flat.T @ patches_flat) / n
    eigenvalues, eigenvectors = torch.linalg.eigh(est_patch_covariance, UPLO='U')
    return eigenvalues.flip(0).view(-1, 1, 1, 1), eigenvectors.T.reshape(c*h*w,c,h,w).flip(0)


def init_whitening_conv(layer, train_set, eps=5e-4):
    patches = get_patches(train_set, patch_shape=layer.weight.data.shape[2:])
    eigenvalues, eigenvectors = get_whitening_parameters(patches)
    eigenvectors_scaled = eigenvectors / torch.sqrt(eigenvalues + eps)
    layer.weight.data[:] = torch.cat((eigenvectors_scaled, -eigenvectors_scaled))

############################################
#                Lookahead                 #
############################################


class LookaheadState:
    def __init__(self, net):
        self.net_ema = {k: v.clone() for k, v in net.state_dict().items()}

    def update(self, net, decay):
        for ema_param, net_param in zip(self.net_ema.values(), net.state_dict().values()):
            if net_param.dtype in (torch.half, torch.float):
                ema_param.lerp_(net_param, 1-decay)
                net_param.copy_(ema_param)

############################################
#               Evaluation                 #
############################################


def infer(model, loader, tta_level=0, autocast=None):

    # Test-time augmentation strategy (for tta_level=2):
    # 1. Flip/mirror the image left-to-right (50% of the time).
    # 2. Translate the image by one pixel either up-and-left or down-and-right (50% of the time,
    #    i.e. both happen 25% of the time).
    #
    # This creates 6 views per image (left/right times the two translations and no-translation),
    # which we evaluate and then weight according to the given probabilities.

    def infer_basic(inputs, net):
        return net(inputs).clone()

    def infer_mirror(inputs, net):
        return 0.5 * net(inputs) + 0.5 * net(inputs.flip(-1))

    def infer_mirror_translate(inputs, net):
        logits = infer_mirror(inputs, net)
        pad = 1
        padded_inputs = F.pad(inputs, (pad,)*4, 'reflect')
        inputs_translate_list = [
            padded_inputs[:, :, 0:32, 0:32],
            padded_inputs[:, :, 2:34, 2:34],
        ]
        logits_translate_list = [infer_mirror(inputs_translate, net)
                                 for inputs_translate in inputs_translate_list]
        logits_translate = torch.stack(logits_translate_list).mean(0)
        return 0.5 * logits + 0.5 * logits_translate

    model.eval()
    test_images = loader.normalize(loader.images)
    infer_fn = [infer_basic, infer_mirror, infer_mirror_translate][tta_level]
    with torch.no_grad(), autocast():
        return torch.cat([infer_fn(inputs, model) for inputs in test_images.split(2000)])


def evaluate(model, loader, tta_level=0, autocast=None):
    logits = infer(model, loader, tta_level, autocast)
    return (logits.argmax(1) == loader.labels).float().mean().item()

############################################
#          Device, timing, report          #
############################################


def pick_precision(precision, device):
    if precision == "auto":
        return "fp16" if device.type == "cuda" else "fp32"
    if precision == "fp16" and device.type != "cuda":
        raise SystemExit("--precision fp16 is airbench's .half() path, for CUDA only; use bf16 or fp32 on the CPU.")
    return precision


def autocast_for(precision, device):
    """-> a context factory: bf16 autocast around forward and loss, else nothing."""
    if precision == "bf16":
        return lambda: torch.autocast(device.type, dtype=torch.bfloat16)
    import contextlib

    return contextlib.nullcontext


def clock(device):
    """time.perf_counter, after the device has finished what it was given."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()


def cpu_model():
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def machine_info(device):
    info = {"processor": platform.processor(), "machine": platform.machine(), "cpu_model": cpu_model(),
            "cpu_count": os.cpu_count(), "torch": torch.__version__, "threads": torch.get_num_threads(),
            "device": str(device)}
    if device.type == "cuda":
        info["device_name"] = torch.cuda.get_device_name(device)
    return info


def time_to(threshold, rows, tta_acc=None, tta_time_s=None):
    """Cumulative training seconds at the end of the first epoch whose test accuracy reached
    `threshold`; else, if the final TTA accuracy reaches it, training plus TTA time (airbench's count)."""
    for row in rows:
        if row["test_acc"] >= threshold:
            return row["cumulative_train_s"]
    if tta_acc is not None and tta_acc >= threshold:
        return rows[-1]["cumulative_train_s"] + tta_time_s if rows else tta_time_s
    return None


def write_json(path, report):
    """Atomically: a run killed mid-write keeps the previous epoch's report."""
    if not path:
        return
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    tmp = f"{path}.tmp"
    with open(tmp, "w") as handle:
        json.dump(report, handle, indent=2)
    os.replace(tmp, path)


COLUMNS = ["epoch", "steps", "train_loss", "train_acc", "test_acc", "epoch_s", "ms/step", "cumulative_s"]


def print_header(log):
    log("| " + " | ".join(f"{name:>12}" for name in COLUMNS) + " |")
    log("|" + "|".join("-" * 14 for _ in COLUMNS) + "|")


def print_row(row, log):
    cells = [row["epoch"], row["steps"], f"{row['train_loss']:.4f}", f"{row['train_acc']:.4f}",
             f"{row['test_acc']:.4f}", f"{row['train_time_s']:.2f}",
             f"{1e3 * row['train_time_s'] / max(row['steps'], 1):.1f}", f"{row['cumulative_train_s']:.2f}"]
    log("| " + " | ".join(f"{cell:>12}" for cell in cells) + " |")

############################################
#                Training                  #
############################################


def load_data(args):
    data = load_cifar(args.data, args.data_dir, 0.0, args.seed)
    return data.limit(args.train_images, args.test_images, seed=args.seed)


def train(args, data, log=print):
    """One airbench94 run; -> the report (also written to `args.out` after every epoch)."""
    device = torch.device(args.device)
    precision = pick_precision(args.precision, device)
    memory_format = torch.channels_last if args.memory_format == "channels_last" else torch.contiguous_format
    if device.type == "cpu":
        torch.set_num_threads(args.threads)
    torch.backends.cudnn.benchmark = True
    torch.manual_seed(args.seed)
    autocast = autocast_for(precision, device)
    data_dtype = torch.half if precision == "fp16" else torch.float32

    batch_size = args.batch_size or hyp['opt']['batch_size']
    epochs = args.epochs if args.epochs is not None else hyp['opt']['train_epochs']
    momentum = hyp['opt']['momentum']
    # Assuming gradients are constant in time, for Nesterov momentum, the below ratio is how much
    # larger the default steps will be than the underlying per-example gradients. We divide the
    # learning rate by this ratio in order to ensure steps are the same scale as gradients, regardless
    # of the choice of momentum.
    kilostep_scale = 1024 * (1 + 1 / (1 - momentum))
    lr = hyp['opt']['lr'] / kilostep_scale  # un-decoupled learning rate for PyTorch SGD
    wd = hyp['opt']['weight_decay'] * batch_size / kilostep_scale
    lr_biases = lr * hyp['opt']['bias_scaler']

    loss_fn = nn.CrossEntropyLoss(label_smoothing=hyp['opt']['label_smoothing'], reduction='none')
    test_loader = CifarLoader(data.test, device, data_dtype, memory_format, train=False, batch_size=2000)
    train_loader = CifarLoader(data.train, device, data_dtype, memory_format, train=True, batch_size=batch_size,
                               aug=hyp['aug'])
    total_train_steps = ceil(len(train_loader) * epochs)
    if total_train_steps < 1:
        raise SystemExit(f"{len(data.train)} training images make no step of batch {batch_size} in {epochs} epochs.")

    model = make_net(device, precision, memory_format)
    current_steps = 0

    norm_biases = [p for k, p in model.named_parameters() if 'norm' in k and p.requires_grad]
    other_params = [p for k, p in model.named_parameters() if 'norm' not in k and p.requires_grad]
    param_configs = [dict(params=norm_biases, lr=lr_biases, weight_decay=wd/lr_biases),
                     dict(params=other_params, lr=lr, weight_decay=wd/lr)]
    optimizer = torch.optim.SGD(param_configs, momentum=momentum, nesterov=True)

    def get_lr(step):
        warmup_steps = int(total_train_steps * 0.23)
        warmdown_steps = total_train_steps - warmup_steps
        if step < warmup_steps:
            frac = step / warmup_steps
            return 0.2 * (1 - frac) + 1.0 * frac
        else:
            frac = (step - warmup_steps) / warmdown_steps
            return 1.0 * (1 - frac) + 0.07 * frac
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, get_lr)

    alpha_schedule = 0.95**5 * (torch.arange(total_train_steps+1) / total_train_steps)**3
    lookahead_state = LookaheadState(model)

    report = {
        "config": {**{k: v for k, v in vars(args).items() if k != "out"}, "precision": precision,
                   "batch_size": batch_size, "epochs": epochs, "total_train_steps": total_train_steps,
                   "train_images": len(data.train), "test_images": len(data.test), "data_source": data.source,
                   "autocast": "bf16" if precision == "bf16" else None, "hyp": copy.deepcopy(hyp)},
        "machine": machine_info(device),
        "whiten_init_s": None, "epochs": [], "tta_acc": None, "tta_time_s": None, "total_time_s": None,
        "time_to_90": None, "time_to_94": None, "finished": False,
    }
    wall_start = time.perf_counter()

    # Initialize the whitening layer using training images
    start = clock(device)
    # airbench takes the first 5000 of torchvision's (class-mixed) order; this data is sorted by
    # class, so every 10th image gives the same mix of classes
    stride = max(len(train_loader.images) // 5000, 1)
    train_images = train_loader.normalize(train_loader.images[::stride][:5000])
    init_whitening_conv(model[0], train_images)
    total_time_seconds = report["whiten_init_s"] = clock(device) - start
    del train_images
    program = getattr(args, "variant", "airbench94")
    log(f"{program} on {device} ({precision}, {args.memory_format}, {torch.get_num_threads()} threads): "
        f"{len(data.train)} train / {len(data.test)} test images, {total_train_steps} steps of {batch_size}; "
        f"whitening init {report['whiten_init_s']:.3f} s")
    print_header(log)

    for epoch in range(ceil(epochs)):

        model[0].bias.requires_grad = (epoch < hyp['opt']['whiten_bias_epochs'])

        ####################
        #     Training     #
        ####################

        start = clock(device)
        steps_before = current_steps

        model.train()
        for inputs, labels in train_loader:

            with autocast():
                outputs = model(inputs)
                loss = loss_fn(outputs, labels).sum()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()

            current_steps += 1

            if current_steps % 5 == 0:
                lookahead_state.update(model, decay=alpha_schedule[current_steps].item())

            if current_steps >= total_train_steps:
                if lookahead_state is not None:
                    lookahead_state.update(model, decay=1.0)
                break

        epoch_time = clock(device) - start
        total_time_seconds += epoch_time

        ####################
        #    Evaluation    #
        ####################

        # Save the accuracy and loss from the last training batch of the epoch
        train_acc = (outputs.detach().argmax(1) == labels).float().mean().item()
        train_loss = loss.item() / len(labels)
        eval_start = time.perf_counter()
        val_acc = evaluate(model, test_loader, tta_level=0, autocast=autocast)
        row = {"epoch": epoch + 1, "steps": current_steps - steps_before, "train_time_s": epoch_time,
               "cumulative_train_s": total_time_seconds, "test_acc": val_acc, "train_loss": train_loss,
               "train_acc": train_acc, "eval_time_s": time.perf_counter() - eval_start}
        report["epochs"].append(row)
        report["time_to_90"] = time_to(0.90, report["epochs"])
        report["time_to_94"] = time_to(0.94, report["epochs"])
        report["wall_time_s"] = time.perf_counter() - wall_start
        write_json(args.out, report)
        print_row(row, log)

    ####################
    #  TTA Evaluation  #
    ####################

    start = clock(device)
    tta_val_acc = evaluate(model, test_loader, tta_level=hyp['net']['tta_level'], autocast=autocast)
    tta_time = clock(device) - start
    total_time_seconds += tta_time

    report.update(tta_acc=tta_val_acc, tta_time_s=tta_time, total_time_s=total_time_seconds,
                  time_to_90=time_to(0.90, report["epochs"], tta_val_acc, tta_time),
                  time_to_94=time_to(0.94, report["epochs"], tta_val_acc, tta_time),
                  wall_time_s=time.perf_counter() - wall_start, finished=True)
    write_json(args.out, report)
    log(f"TTA (level {hyp['net']['tta_level']}) accuracy {tta_val_acc:.4f} in {tta_time:.2f} s; "
        f"total {total_time_seconds:.2f} s (whitening + training + TTA); time to 94%: "
        f"{'never' if report['time_to_94'] is None else format(report['time_to_94'], '.2f') + ' s'}")
    return report


def parse_args(argv=None, add_arguments=None):
    """The command line; `add_arguments(parser)` adds a program's own flags (airbench_muon_torch)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", choices=["cpu", "cuda"])
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads on the CPU (default 2)")
    parser.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16", "fp16"],
                        help="auto: fp16 (airbench's .half()) on CUDA, fp32 on the CPU; bf16: autocast")
    parser.add_argument("--memory-format", default="channels_last", choices=["channels_last", "contiguous"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=float, default=None,
                        help=f"default {hyp['opt']['train_epochs']} (hyp; airbench95's 15 with --variant)")
    parser.add_argument("--batch-size", type=int, default=None, help=f"default {hyp['opt']['batch_size']} (hyp)")
    parser.add_argument("--train-images", type=int, default=None, help="a seeded subset of train (smoke runs)")
    parser.add_argument("--test-images", type=int, default=None, help="a seeded subset of test (smoke runs)")
    parser.add_argument("--data", default=DEFAULT_DATA, help="any source load_cifar reads")
    parser.add_argument("--data-dir", default=None, help="TFDS data directory (load_cifar's default when unset)")
    parser.add_argument("--out", default=None, help="JSON report, rewritten after every epoch")
    if add_arguments is not None:
        add_arguments(parser)
    return parser.parse_args(argv)


def add_variant_argument(parser):
    parser.add_argument("--variant", default="airbench94", choices=list(VARIANTS),
                        help="which airbench program's hyp (default airbench94; airbench95: 15 epochs, widths "
                             "128-384-384, lr 10.0)")


def main(argv=None, data=None, log=None, train_run=None, add_arguments=None):
    """Parses `argv`, loads the data (unless given a CifarData), trains with `train_run`
    (default: airbench94's `train`, or airbench95's with `--variant`; pytorch_reference/airbench_muon_torch.py
    passes its own, and its own flags through `add_arguments`); -> the report."""
    if train_run is None:
        add_arguments = add_variant_argument
    args = parse_args(argv, add_arguments)
    log = log or (lambda line: print(line, flush=True))
    if data is None:
        data = load_data(args)
    else:
        data = data.limit(args.train_images, args.test_images, seed=args.seed)
    with variant(getattr(args, "variant", "airbench94")):
        report = (train_run or train)(args, data, log)
    if not math.isfinite(report["tta_acc"]):
        raise SystemExit("The TTA accuracy is not finite.")
    return report


if __name__ == "__main__":
    main()
