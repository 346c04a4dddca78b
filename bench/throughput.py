"""Training and inference throughput of keras-cifar against a plain PyTorch loop.

Each variant runs in its own worker process (so each has its own peak memory) and the
workers take turns, one timed segment of `--steps` training steps each, in the order
A B C ... then ... C B A, for `--rounds` rounds after one warm-up round: drift of the
machine falls on every variant alike. Reported figures are medians over rounds.

Variants:
  keras            the product's path: `cli.py fit`'s model builder, compile options and
                   callbacks, data prepared through TFDS and fed by TensorLoader
  keras-tensors    the same model and callbacks, fed by Keras's own adapter from tensors
                   already in memory (`fit(x, y, batch_size=...)`)
  keras-tfdata     (--tfdata) the same, fed a tf.data pipeline straight from TFDS
  tidy             the yardstick: the reference module in a tidy plain PyTorch loop
                   (pytorch_reference.torch_loop.TidyRun): data as one tensor on the device, batches by
                   indexing, its fastest memory format and optimizer implementation (probed),
                   `.item()` per step, the test set evaluated under no_grad
  pytorch          the reference module in the original scripts' loop: DataLoader over a
                   TensorDataset, ToTensor-style scaling per batch, Adam, `.item()` per step

After the images/s table, `bench.epochs` measures end-to-end seconds per epoch of the real
`cli.py fit` (training, evaluation, checkpoints, logs) against the tidy loop (`--no-epochs`
skips it).

    python -m bench.throughput                       # the tables of docs/PERFORMANCE.md
    python -m bench.throughput --levers --models cnn # what each lever gives
    python -m bench.throughput --device cuda --models cnn,resnet_lite,inception_lite,googlenet,resnet18
"""

import multiprocessing
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

import click

from bench.timing import interleaved

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ORIGINAL_BATCH = {"cnn": 32, "resnet_lite": 32, "inception_lite": 16, "googlenet": 32, "resnet18": 32}
DEFAULT_DATA = os.path.join(os.path.dirname(REPO), "shared", "data", "cifar10-jpeg.tar.gz")


# --- workers (each in its own process) --------------------------------------------------------


def worker(spec, conn):
    import torch

    torch.set_num_threads(spec["threads"])
    import keras_cifar  # noqa: F401  (backend before tensorflow)

    try:
        if spec["kind"] == "pytorch":
            run_pytorch(spec, conn)
        elif spec["kind"] == "tidy":
            run_tidy(spec, conn)
        else:
            run_keras(spec, conn)
    except Exception as error:  # report, do not hang the parent
        import traceback

        conn.send(("error", f"{spec['label']}: {type(error).__name__}: {error}\n{traceback.format_exc()}"))


def subsets(spec):
    import numpy as np

    from keras_cifar.data import load_cifar

    data = load_cifar(spec["data"], spec["data_dir"], log=lambda message: None)
    rng = np.random.default_rng(0)
    train = data.train.take(np.sort(rng.permutation(len(data.train))[: spec["steps"] * spec["batch"]]))
    test = data.test.take(np.arange(min(spec["eval_images"], len(data.test))))
    return data, train, test


def report_memory(conn):
    import torch

    rss_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    gpu_mib = torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() else None
    conn.send(("memory", rss_mib, gpu_mib))


def run_keras(spec, conn):
    import keras
    import torch

    from keras_cifar.data import TensorLoader
    from keras_cifar.train.config import resolve_config
    from keras_cifar.train.device import select_device, set_precision
    from keras_cifar.train.trainer import build_model, compile_model, make_callbacks, new_run_state

    overrides = dict(model=spec["model"], batch_size=spec["batch"], epochs=spec["rounds"] + 1, data=spec["data"],
                     data_dir=spec["data_dir"], device=spec["device"], **spec.get("config", {}))
    if spec["model"] in ("googlenet", "resnet18") and spec.get("resize_to"):
        overrides["resize_to"] = spec["resize_to"]
    config = resolve_config(None, overrides)
    device = select_device(config.device)
    set_precision(config.mixed_precision, device)
    data, train, test = subsets(spec)

    class Gate(keras.callbacks.Callback):
        """Each epoch is one timed segment, started by the parent."""

        def on_epoch_begin(self, epoch, logs=None):
            conn.recv()
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            self.start = time.perf_counter()

        def on_test_begin(self, logs=None):
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            self.train_end = time.perf_counter()

        def on_test_end(self, logs=None):
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            conn.send(("segment", self.train_end - self.start, time.perf_counter() - self.train_end))

    class SyncEveryStep(keras.callbacks.Callback):
        """A callback that reads the loss every step, as a careless one would (a host sync on a GPU)."""

        def on_train_batch_end(self, batch, logs=None):
            float(logs["loss"])

    with keras.device(device), tempfile.TemporaryDirectory() as run_path:
        model = build_model(config, data.num_classes)
        train_loader = TensorLoader(train, config.batch_size, shuffle=True, augment=config.augment,
                                    seed=config.seed, device=device)
        eval_loader = TensorLoader(test, config.eval_batch_size, device=device)
        compile_model(model, config, len(train_loader))
        model.set_graph_capture(config.jit in ("graph", "graph-compiled"), compiled=config.jit == "graph-compiled")
        callbacks, _ = make_callbacks(config, run_path, new_run_state(), train_loader, eval_is_test=True)
        callbacks.append(Gate())
        if spec.get("sync_each_step"):
            callbacks.append(SyncEveryStep())
        from keras_cifar.train.callbacks import RunCallbacks

        callbacks = RunCallbacks(callbacks, model=model, epochs=config.epochs, steps=len(train_loader), verbose=0)
        fit = dict(epochs=config.epochs, callbacks=callbacks, verbose=0)
        if spec["kind"] == "keras":
            model.fit(train_loader.as_keras_input(), validation_data=eval_loader.as_keras_input(), shuffle=False,
                      **fit)
        elif spec["kind"] == "keras-tensors":
            images = torch.as_tensor(train.images).to(device)
            labels = torch.as_tensor(train.labels).to(device)
            model.fit(images, labels, batch_size=config.batch_size, shuffle=True,
                      validation_data=(torch.as_tensor(test.images).to(device), torch.as_tensor(test.labels)),
                      validation_batch_size=config.eval_batch_size, **fit)
        else:  # keras-tfdata: tf.data from the TFDS records, as a TFDS tutorial would feed Keras
            import tensorflow as tf

            from keras_cifar.data.dataset import _make_builder
            from keras_cifar.data.sources import resolve_source

            source = resolve_source(spec["data"])
            builder = _make_builder(source, spec["data_dir"] or os.path.expanduser("~/tensorflow_datasets"))
            train_ds = (builder.as_dataset(split="train", as_supervised=True).take(len(train))
                        .shuffle(10_000, seed=0).batch(config.batch_size).prefetch(tf.data.AUTOTUNE))
            test_ds = builder.as_dataset(split="test", as_supervised=True).take(len(test)).batch(
                config.eval_batch_size)
            model.fit(train_ds, validation_data=test_ds, **fit)
        report_memory(conn)


def run_pytorch(spec, conn):
    import torch

    from pytorch_reference.torch_loop import ReferenceRun, make_loader

    data, train, test = subsets(spec)
    device = "cuda" if spec["device"] in ("cuda", "auto") and torch.cuda.is_available() else "cpu"
    resize_to = spec.get("resize_to") or "default"
    run = ReferenceRun(spec["model"], data.num_classes, *PYTORCH_OPTIMIZER[spec["model"]], resize_to=resize_to,
                       device=device)
    train_loader = make_loader(train, spec["batch"], shuffle=True)
    test_loader = make_loader(test, 500, shuffle=False)
    for _ in range(spec["rounds"] + 1):
        conn.recv()
        start = time.perf_counter()
        for images, labels in train_loader:
            run.train_step(images, labels)
        if device == "cuda":
            torch.cuda.synchronize()
        train_end = time.perf_counter()
        run.evaluate(test_loader)
        if device == "cuda":
            torch.cuda.synchronize()
        conn.send(("segment", train_end - start, time.perf_counter() - train_end))
    report_memory(conn)


def run_tidy(spec, conn):
    import torch

    from pytorch_reference.torch_loop import fastest_tidy_run
    from keras_cifar.train.device import set_precision

    data, train, test = subsets(spec)
    device = "cuda" if spec["device"] in ("cuda", "auto") and torch.cuda.is_available() else "cpu"
    set_precision("none", device)  # TF32 and cuDNN autotuning on a GPU, as the product
    optimizer, lr = PYTORCH_OPTIMIZER[spec["model"]]
    run = fastest_tidy_run(spec["model"], train, test, spec["batch"], optimizer, lr,
                           device=device,
                           resize_to=spec.get("resize_to") or "default")
    for _ in range(spec["rounds"] + 1):
        conn.recv()
        start = time.perf_counter()
        run.train_epoch()
        if device == "cuda":
            torch.cuda.synchronize()
        train_end = time.perf_counter()
        run.evaluate()
        conn.send(("segment", train_end - start, time.perf_counter() - train_end))
    report_memory(conn)


PYTORCH_OPTIMIZER = {  # the originals' optimizer and learning rate
    "cnn": ("adam", 1e-3), "resnet_lite": ("adam", 1e-3), "inception_lite": ("adam", 1e-3),
    "googlenet": ("adam", 1e-4), "resnet18": ("sgd", 1e-3),
}


# --- the parent: interleaving and tables ---------------------------------------------------------


def measure(specs, rounds):
    """Runs the variants in alternating order; -> {label: {"train": [s...], "eval": [s...], "rss":, "gpu":}}."""
    context = multiprocessing.get_context("spawn")
    workers = []
    for spec in specs:
        parent_end, child_end = context.Pipe()
        process = context.Process(target=worker, args=(spec, child_end), daemon=True)
        process.start()
        workers.append((spec, parent_end, process))

    def segment(conn):
        conn.send("go")
        message = conn.recv()
        if message[0] == "error":
            raise RuntimeError(message[1])
        return message[1], message[2]

    try:
        # round 0 warms up (and captures, compiles, autotunes)
        rounds_run = interleaved({spec["label"]: (lambda conn=conn: segment(conn)) for spec, conn, _ in workers},
                                 rounds, warmup=1)
        results = {label: {"train": [train for train, _ in segments], "eval": [test for _, test in segments]}
                   for label, segments in rounds_run.items()}
        for spec, conn, process in workers:
            message = conn.recv()
            if message[0] == "error":
                raise RuntimeError(message[1])
            results[spec["label"]]["rss"], results[spec["label"]]["gpu"] = message[1], message[2]
            process.join(60)
    finally:
        for _, _, process in workers:
            if process.is_alive():
                process.kill()
    return results


def images_per_second(seconds, images):
    return images / statistics.median(seconds)


def base_spec(args, model, kind, label, **extra):
    batch = ORIGINAL_BATCH[model]
    return dict(kind=kind, label=label, model=model, batch=batch, steps=args["steps"], rounds=args["rounds"],
                data=args["data"], data_dir=args["data_dir"], device=args["device"], threads=args["threads"],
                eval_images=args["eval_images"], resize_to=args["resize_to"], **extra)


def main_table(args):
    rows = []
    for model in args["models"]:
        kinds = ["keras", "tidy", "pytorch", "keras-tensors"] + (["keras-tfdata"] if args["tfdata"] else [])
        specs = [base_spec(args, model, kind, kind) for kind in kinds]
        print(f"{model}: {', '.join(kinds)}", file=sys.stderr, flush=True)
        results = measure(specs, args["rounds"])
        train_images = args["steps"] * ORIGINAL_BATCH[model]
        eval_images = specs[0]["eval_images"]
        keras, tidy = results["keras"], results["tidy"]
        row = {
            "model": model, "batch": ORIGINAL_BATCH[model],
            "keras": images_per_second(keras["train"], train_images),
            "tidy": images_per_second(tidy["train"], train_images),
            "pytorch": images_per_second(results["pytorch"]["train"], train_images),
            "keras_eval": images_per_second(keras["eval"], eval_images),
            "tidy_eval": images_per_second(tidy["eval"], eval_images),
            "tensors": images_per_second(results["keras-tensors"]["train"], train_images),
            "rss": keras["rss"], "tidy_rss": tidy["rss"], "gpu": keras["gpu"], "tidy_gpu": tidy["gpu"],
        }
        if args["tfdata"]:
            row["tfdata"] = images_per_second(results["keras-tfdata"]["train"], train_images)
        rows.append(row)
        print(f"  {model}: Keras {row['keras']:.0f} img/s, tidy PyTorch {row['tidy']:.0f} img/s", file=sys.stderr,
              flush=True)
    print_main(rows, args)
    return rows


def print_main(rows, args):
    print(f"\nTraining and inference images/s, median of {args['rounds']} interleaved rounds of {args['steps']} "
          f"steps; {args['threads']} threads; {args['device_name']}")
    print("ratio = Keras / tidy PyTorch (> 1: Keras is faster)")
    header = ("| model | batch | Keras img/s | tidy PyTorch img/s | ratio | original-scripts PyTorch (DataLoader) img/s "
              "| Keras eval img/s | tidy eval img/s | eval ratio | Keras fed in-memory tensors img/s "
              "| Keras peak RSS MiB | tidy peak RSS MiB | Keras / tidy peak GPU MiB |")
    extra = " Keras on tf.data img/s |" if args["tfdata"] else ""
    print(header + extra)
    print("|" + "---|" * (header.count("|") - 1 + (1 if extra else 0)))
    for r in rows:
        gpu = f"{r['gpu']:.0f} / {r['tidy_gpu']:.0f}" if r["gpu"] is not None else "-"
        line = (f"| {r['model']} | {r['batch']} | {r['keras']:.0f} | {r['tidy']:.0f} | {r['keras'] / r['tidy']:.2f} | "
                f"{r['pytorch']:.0f} | {r['keras_eval']:.0f} | {r['tidy_eval']:.0f} | "
                f"{r['keras_eval'] / r['tidy_eval']:.2f} | {r['tensors']:.0f} | {r['rss']:.0f} | {r['tidy_rss']:.0f} "
                f"| {gpu} |")
        if args["tfdata"]:
            line += f" {r['tfdata']:.0f} |"
        print(line, flush=True)


LEVERS = [
    # label, worker overrides, what it is
    ("keras (defaults)", {}, "channels_first, graph capture (graph), TensorLoader"),
    ("jit off", {"config": {"jit": "off"}}, "eager Keras: every layer through Layer.__call__"),
    ("channels_last", {"config": {"data_format": "channels_last"}}, "Keras transposes around every conv"),
    ("sync every step", {"sync_each_step": True}, "a callback reading the loss every step"),
    ("bf16", {"config": {"mixed_precision": "bf16"}}, "mixed_bfloat16 policy"),
    ("1 thread", {"threads": 1}, "torch.set_num_threads(1)"),
    ("tidy", {"kind": "tidy"}, "tidy plain PyTorch loop, its fastest memory format and optimizer"),
    ("pytorch", {"kind": "pytorch"}, "the original scripts' DataLoader loop (contiguous NCHW)"),
]


def lever_table(args):
    for model in args["models"]:
        specs = []
        for label, overrides, _ in LEVERS:
            if label == "1 thread" and args["threads"] == 1:
                continue
            spec = base_spec(args, model, overrides.get("kind", "keras"), label)
            spec.update({k: v for k, v in overrides.items() if k != "kind"})
            specs.append(spec)
        if args["compile"]:
            spec = base_spec(args, model, "keras", "torch.compile")
            spec["config"] = {"jit": "compile"}
            specs.append(spec)
        print(f"{model} levers: {', '.join(s['label'] for s in specs)}", file=sys.stderr, flush=True)
        results = measure(specs, args["rounds"])
        train_images = args["steps"] * ORIGINAL_BATCH[model]
        base = images_per_second(results["keras (defaults)"]["train"], train_images)
        torch_base = images_per_second(results["tidy"]["train"], train_images)
        print(f"\nLevers for {model} (batch {ORIGINAL_BATCH[model]}, {args['device_name']}), median of "
              f"{args['rounds']} rounds of {args['steps']} steps")
        print("| variant | what | train img/s | vs Keras defaults | vs tidy PyTorch |")
        print("|---|---|---|---|---|")
        notes = {label: note for label, _, note in LEVERS}
        notes["torch.compile"] = "jit_compile=True: Keras wraps the train step in torch.compile"
        for spec in specs:
            ips = images_per_second(results[spec["label"]]["train"], train_images)
            print(f"| {spec['label']} | {notes[spec['label']]} | {ips:.0f} | {ips / base:.2f} | "
                  f"{ips / torch_base:.2f} |", flush=True)


def memory_check(args):
    """Peak RSS of a full-dataset `cli.py fit` of a 32x32 model (1 epoch) in a child process."""
    model = args["models"][0] if args["models"][0] in ("cnn", "resnet_lite", "inception_lite") else "cnn"
    with tempfile.TemporaryDirectory() as logs:
        command = [sys.executable, os.path.join(REPO, "cli.py"), "fit", "--model", model, "--epochs", "1",
                   "--data", args["data"], "--log-dir", logs, "--device", args["device"]]
        if args["data_dir"]:
            command += ["--data-dir", args["data_dir"]]
        started = time.perf_counter()
        result = subprocess.run(command, capture_output=True, text=True)
        elapsed = time.perf_counter() - started
    if result.returncode:
        raise RuntimeError(result.stderr[-2000:])
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print(f"\nFull CIFAR-10 fit, 1 epoch of {model} (50,000 images), {args['device_name']}: peak RSS {peak:.0f} MiB "
          f"({peak / 1024:.2f} GiB; target <= 3 GiB), {elapsed:.0f} s wall including start-up")


@click.command()
@click.option("--models", default="cnn,resnet_lite,inception_lite", show_default=True)
@click.option("--steps", type=int, default=150, show_default=True, help="Training steps per timed segment.")
@click.option("--rounds", type=int, default=3, show_default=True, help="Timed rounds (after one warm-up).")
@click.option("--eval-images", type=int, default=5000, show_default=True)
@click.option("--data", default=DEFAULT_DATA, show_default=True, help="Any --data source of cli.py.")
@click.option("--data-dir", default=None, help="TFDS data directory.")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True)
@click.option("--threads", type=int, default=None, help="torch threads per worker (default: all cores).")
@click.option("--resize-to", type=int, default=None, help="googlenet/resnet18 input size (default 224).")
@click.option("--tfdata", is_flag=True, help="Also feed Keras a tf.data pipeline straight from TFDS.")
@click.option("--levers", is_flag=True, help="Measure the levers instead of the main table.")
@click.option("--compile", "compile_", is_flag=True, help="With --levers: also torch.compile (slow to start).")
@click.option("--memory/--no-memory", default=True, help="Also measure peak RSS of a full 1-epoch fit.")
@click.option("--epochs/--no-epochs", "epochs", default=True,
              help="Also measure end-to-end seconds per epoch of `cli.py fit` against the tidy loop (bench.epochs).")
def main(models, steps, rounds, eval_images, data, data_dir, device, threads, resize_to, tfdata, levers, compile_,
         memory, epochs):
    import platform

    import torch

    cuda = device == "cuda" or (device == "auto" and torch.cuda.is_available())
    device_name = (torch.cuda.get_device_name(0) if cuda else f"CPU {platform.processor() or platform.machine()}, "
                   f"{os.cpu_count()} cores")
    args = dict(models=models.split(","), steps=steps, rounds=rounds, eval_images=eval_images, data=data,
                data_dir=data_dir, device="cuda" if cuda else "cpu", threads=threads or torch.get_num_threads(),
                resize_to=resize_to, tfdata=tfdata, compile=compile_, device_name=device_name)
    print(f"torch {torch.__version__}, {args['threads']} threads, {device_name}", flush=True)
    if levers:
        lever_table(args)
    else:
        main_table(args)
    if epochs and not levers:
        from bench import epochs as end_to_end

        rows = [end_to_end.measure(model, ORIGINAL_BATCH[model], data, args["device"], 1, data_dir)
                for model in args["models"]]
        end_to_end.print_table(rows, end_to_end.machine_name(args["device"]))
    if memory and not levers:
        memory_check(args)


if __name__ == "__main__":
    main()
