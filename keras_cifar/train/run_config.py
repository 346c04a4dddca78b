"""`RunConfig`: the one schema of a run's settings.

Each field declares its type (the annotation), its default, and in its metadata the help text,
the allowed choices or range, whether a resumed run may change it, and whether it is a
model-specific setting. From these alone come the `fit` flags (`keras_cifar/cli.py`), the
validation (`config.py`) and the settings table of docs/SETTINGS.md (`settings_doc.py`). A
model-specific setting (`resize_to`, `weights`, `normalize`) applies to the models whose registry
entry declares it (`register_model(..., settings=...)`). Every experiment in `configs/` is one
YAML file of these keys.
"""

import dataclasses
import typing
from typing import Optional


def setting(default, help, *, choices=None, pattern=None, min=None, max=None, min_open=False, max_open=False,
            label=None, path=None, none_words=(), resumable=False, model_specific=False):
    """A RunConfig field and its metadata.

    `choices`: the allowed values. `pattern`: (regular expression, the same in words) of allowed
    strings, where a list of choices cannot say it. `min`/`max` (with `min_open`/`max_open`): the allowed range.
    `label`: words that follow the name in messages ("`lr` (learning rate) must be ...").
    `path="dir"`: the flag takes a folder path. `none_words`: strings that mean None
    (`--weights none`). `resumable`: a resumed run may change it. `model_specific`: passed to the
    model builder of the models that declare it in the registry, rejected for the others.
    """
    metadata = dict(help=help, choices=tuple(choices) if choices else None, pattern=pattern, min=min, max=max,
                    min_open=min_open, max_open=max_open, label=label, path=path, none_words=tuple(none_words),
                    resumable=resumable, model_specific=model_specific)
    return dataclasses.field(default=default, metadata=metadata)


@dataclasses.dataclass
class RunConfig:
    # --- what to train
    model: str = setting("cnn", "Model to train (see `models`); its config in configs/<model>.yaml gives the "
                                "defaults.")
    weights: Optional[str] = setting(
        None, "Initial weights: 'imagenet' (torchvision's, downloaded once), a path to a torchvision .pth state "
              "dict, or 'none' (random).", none_words=("none", "random"), model_specific=True)
    init: str = setting("torch", "Initial weights: PyTorch's default initialisation, as the originals, or Keras's.",
                        choices=("torch", "keras"))
    data_format: str = setting("channels_first", "Activation layout inside the model (channels_first is faster "
                                                 "on torch).", choices=("channels_first", "channels_last"))
    resize_to: Optional[int] = setting(None, "Upscale size in pixels (unset: 224, as the originals).", min=32,
                                       model_specific=True)
    whitening: str = setting("data", "The first layer (2x2 patches to 24 channels). data: a frozen kernel that "
                                     "whitens the training images' patches (airbench); learned: an ordinary "
                                     "trainable convolution (the ablation).", choices=("data", "learned"),
                             model_specific=True)
    head: str = setting("airbench94", "airbench94's classifier head. airbench94: PyTorch's initialisation, logits "
                                      "x 1/9; muon (airbench94_muon): weights scaled to unit std, logits / 256 "
                                      "(the last block's width).", choices=("airbench94", "muon"),
                        model_specific=True)
    whiten_bias_init: str = setting("zeros", "airbench94's whitening bias at the start. zeros: airbench94's; uniform "
                                             "(airbench94_muon): PyTorch's nn.Conv2d default, U(+-1/sqrt(12)).",
                                    choices=("zeros", "uniform"), model_specific=True)
    normalize: bool = setting(False, "Standardize pixels with CIFAR-10's per-channel mean and std instead of only "
                                     "scaling to [0, 1] (off in the original configs).", model_specific=True)
    # --- data
    data: str = setting("cifar10", "'cifar10' (TFDS, downloaded once) or a path to a local copy: "
                                   "cifar-10-batches-py, cifar-10-batches-bin, an image folder, or an archive.",
                        resumable=True)
    data_dir: Optional[str] = setting(None, "Where TFDS prepares and caches data (unset: ~/tensorflow_datasets).",
                                      path="dir", resumable=True)
    val_split: float = setting(0.0, "Hold out this fraction of train for per-epoch validation (0: evaluate on "
                                    "test).", min=0, max=1, max_open=True)
    augment: bool = setting(False, "Random 4-pixel crop and horizontal flip of training images (off in the "
                                   "original configs); `crop_padding`, `crop_fill` and `flip` shape it.")
    crop_padding: int = setting(4, "With `augment`: the largest random translation, in pixels.", min=0, max=16)
    crop_fill: str = setting("zeros", "With `augment`: what a translation moves in at the border: zeros "
                                      "(torchvision's RandomCrop(32, padding)) or reflect (mirrored pixels).",
                             choices=("zeros", "reflect"))
    flip: str = setting("random", "With `augment`: horizontal flips. random: each image with probability 1/2, "
                                  "every epoch; alternate: a random half of the images in even epochs and the "
                                  "other half in odd ones (airbench); none.", choices=("random", "alternate", "none"))
    train_images: Optional[int] = setting(None, "Train on a random subset of this many images (quick runs).",
                                          min=1)
    eval_images: Optional[int] = setting(None, "Evaluate every epoch on a random subset of this many images "
                                               "(quick runs).", min=1)
    # --- optimisation
    epochs: int = setting(20, "Number of epochs.", min=1, resumable=True)
    batch_size: int = setting(32, "Images per training step on each process: under torchrun with N processes "
                                  "the global batch is N x batch_size (the learning rate is not rescaled).", min=1)
    drop_last: bool = setting(False, "Skip each epoch's last partial training batch, so that every step trains on a "
                                     "full batch (airbench; each epoch leaves out a different random remainder).")
    eval_batch_size: int = setting(500, "Images per evaluation step (no effect on results).", min=1,
                                   resumable=True)
    optimizer: str = setting("adam", "Optimizer (adam, adamw and sgd step as torch.optim's, fused; muon: "
                                     "airbench94_muon's Muon for the convolution kernels at `muon_lr`, sgd at `lr` "
                                     "for every other weight).", choices=("adam", "adamw", "sgd", "muon"))
    lr: float = setting(1e-3, "(Peak) learning rate.", min=0, min_open=True, label="learning rate")
    momentum: float = setting(0.9, "SGD momentum.", min=0, max=1, max_open=True)
    nesterov: bool = setting(False, "SGD (and Muon) with Nesterov momentum.")
    muon_lr: float = setting(0.24, "muon: (peak) learning rate of the convolution kernels; it follows "
                                   "`schedule` as `lr` does. The step is orthogonalised, so the loss's scale "
                                   "does not matter.", min=0, min_open=True)
    muon_momentum: float = setting(0.6, "muon: momentum of the convolution kernels' Muon step.", min=0, max=1,
                                   max_open=True)
    weight_decay: float = setting(0.0, "Weight decay, as torch.optim's: adamw decoupled (per step, times the learning "
                                       "rate); adam and sgd an L2 term added to the gradients; muon: the SGD part's "
                                       "(Muon keeps each kernel at a fixed norm instead).", min=0)
    schedule: str = setting("constant", "Learning-rate schedule over all training steps.",
                            choices=("constant", "cosine", "one-cycle", "triangle", "linear"))
    warmup_epochs: float = setting(0.0, "Warm-up length in epochs (cosine), or rise length (one-cycle; 0: 30% of "
                                        "the steps; triangle: 0: 23%, linear from 0.2 x lr to lr, then linear to "
                                        "0.07 x lr at the end). At most `epochs`. linear: from lr at the "
                                        "first step to 0 at the last, no warm-up (a weight that trains for the "
                                        "first epochs only, as airbench94's whitening bias, reaches 0 at its own "
                                        "last step).", min=0)
    label_smoothing: float = setting(0.0, "Label smoothing.", min=0, max=1, max_open=True)
    bn_bias_lr_scale: float = setting(1.0, "sgd, muon: learning-rate multiplier of batch-norm biases; their weight decay "
                                           "is divided by it, so the decay per step is unchanged (airbench: 64).",
                                      min=0, min_open=True)
    head_lr_scale: float = setting(1.0, "sgd, muon: learning-rate multiplier of the classifier head (the last "
                                        "Dense layer's weights); their weight decay is divided by it "
                                        "(airbench94_muon: 0.67 / 0.053).", min=0, min_open=True)
    lookahead: int = setting(0, "sgd: every this many steps, pull the weights and batch-norm statistics to "
                                "their running average (airbench's lookahead, decay rising to 0.77 at the end, "
                                "where they take the average); 0: off.", min=0)
    # --- evaluation
    tta: bool = setting(False, "Final evaluation with test-time augmentation: the mean logits of the image and "
                               "its mirror, and of both shifted one pixel up-left and down-right (6 passes; "
                               "airbench's level 2). Per-epoch evaluations stay plain.", resumable=True)
    target_accuracy: Optional[float] = setting(None, "Report the training time to this accuracy on the evaluated "
                                                     "split (in the output and summary.json); with the final "
                                                     "TTA evaluation too when `tta` is on.", min=0, max=1,
                                               min_open=True, resumable=True)
    stop_at_target: bool = setting(False, "Stop training at the end of the epoch that reaches `target_accuracy`.",
                                   resumable=True)
    # --- execution
    seed: int = setting(0, "Seed of weights, data order, augmentation and dropout.", min=0, max=2**32 - 1)
    device: str = setting("auto", "Device: cuda (GPU 0), cuda:N, cpu, or auto (cuda when available, else cpu; "
                                  "warns when googlenet or resnet18 would fall back to the CPU).",
                          pattern=(r"auto|cpu|cuda(:\d+)?", "auto, cpu, cuda or cuda:N"), resumable=True)
    deterministic: bool = setting(False, "GPU: bit-reproducible runs (deterministic cuDNN and cuBLAS algorithms, no "
                                         "autotuning, no TF32; slower). Off: TF32 matmuls and convolutions and "
                                         "cuDNN autotuning. The settings in force go into summary.json.",
                                  resumable=True)
    mixed_precision: str = setting("none", "Mixed precision: bf16 (GPU or bf16-capable CPU) or fp16 (GPU only).",
                                   choices=("none", "bf16", "fp16"))
    jit: str = setting("graph", "graph: replay the forward graph captured once by torch.export, op by op (the ops "
                                "of eager Keras without its per-layer Python); graph-compiled: that graph "
                                "compiled by torch.compile (Inductor's fused kernels: for GPUs; slower on a "
                                "CPU); compile: Keras's jit_compile (torch.compile of the whole step); off: "
                                "eager Keras. `trace` and `trace-fused` (TorchScript, retired) read as graph.",
                       choices=("graph", "graph-compiled", "compile", "off"), resumable=True)
    sync_bn: bool = setting(False, "Under torchrun: batch-norm statistics over the global batch of all processes "
                                   "(turns graph capture off). No effect in a single process.")
    dist_timeout: float = setting(300.0, "Under torchrun: seconds after which a stopped or hung process ends the "
                                         "job, naming its rank.", min=0, min_open=True, resumable=True)
    log_dir: str = setting("logs", "Where run folders go (default logs/, in the working folder).", path="dir")
    tensorboard: bool = setting(True, "Write TensorBoard summaries into the run folder (needs TensorFlow). Off: "
                                      "metrics.csv, summary.json and the checkpoints only, for machines without "
                                      "TensorFlow (a GPU image with torch alone).", resumable=True)


FIELDS = {field.name: field for field in dataclasses.fields(RunConfig)}
TYPES = typing.get_type_hints(RunConfig)
CHOICES = {name: field.metadata["choices"] for name, field in FIELDS.items() if field.metadata["choices"]}
MODEL_SPECIFIC = tuple(name for name, field in FIELDS.items() if field.metadata["model_specific"])
RESUMABLE = frozenset(name for name, field in FIELDS.items() if field.metadata["resumable"])
