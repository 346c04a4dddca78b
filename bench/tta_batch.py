"""Time of the final test-time-augmentation pass (6 views of the test set) against the evaluation
batch size, on one saved checkpoint: what `eval_batch_size` costs a run's time to accuracy.

    python -m bench.tta_batch RUN_FOLDER_OR_KERAS_FILE --data ../shared/data/cifar10-jpeg.tar.gz \
        --batch-sizes 1000,2000 --rounds 2

The checkpoint is loaded as `cli.py evaluate` loads it (graph capture on, its saved precision).
Each round times every batch size once, the order reversed in every other round, after one
untimed warm-up pass per size; the table gives the median seconds per pass and the accuracy
(the same at every size, up to rounding).
"""

import argparse
import statistics
import time


def measure(model, split, batch_sizes, rounds):
    """-> {batch size: [seconds of each timed pass]}, {batch size: accuracy}."""
    from keras_cifar.train.evaluation import predict_logits_tta

    accuracy = {}
    for size in batch_sizes:  # warm-up: captures, allocator
        accuracy[size] = float((predict_logits_tta(model, split, size).argmax(-1) == split.labels).mean())
    times = {size: [] for size in batch_sizes}
    for round_index in range(rounds):
        for size in (batch_sizes if round_index % 2 == 0 else batch_sizes[::-1]):
            started = time.perf_counter()
            predict_logits_tta(model, split, size)
            times[size].append(time.perf_counter() - started)
    return times, accuracy


def table(times, accuracy):
    lines = ["| eval batch | TTA pass s (median) | each round s | accuracy with TTA % |", "|---|---|---|---|"]
    for size, seconds in times.items():
        lines.append(f"| {size} | {statistics.median(seconds):.1f} | {', '.join(f'{s:.1f}' for s in seconds)} "
                     f"| {100 * accuracy[size]:.2f} |")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint", help="a run folder (its best.keras) or a .keras file")
    parser.add_argument("--data", default="cifar10", help="any source load_cifar reads")
    parser.add_argument("--data-dir", default=None, help="TFDS data directory (load_cifar's default when unset)")
    parser.add_argument("--batch-sizes", default="1000,2000", help="comma-separated (default 1000,2000)")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--test-images", type=int, default=None, help="the first N test images (smoke runs)")
    args = parser.parse_args(argv)
    sizes = [int(size) for size in args.batch_sizes.split(",")]
    if not sizes or min(sizes) < 1 or args.rounds < 1:
        parser.error(f"--batch-sizes must be positive integers and --rounds >= 1. Received: "
                     f"--batch-sizes {args.batch_sizes!r}, --rounds {args.rounds}")

    from keras_cifar.data import load_cifar
    from keras_cifar.train.checkpoints import load_checkpoint
    from keras_cifar.train.run_dir import resolve_checkpoint

    model = load_checkpoint(resolve_checkpoint(args.checkpoint, "logs"))
    model.set_graph_capture(True)
    test = load_cifar(args.data, args.data_dir).test
    if args.test_images:
        test = test.take(slice(0, args.test_images))
    times, accuracy = measure(model, test, sizes, args.rounds)
    print(table(times, accuracy))
    return times, accuracy


if __name__ == "__main__":
    main()
