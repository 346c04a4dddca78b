"""How much one more JPEG compression costs: a copy of the real data, every image compressed once more.

    python -m bench.jpeg_again SOURCE.tar.gz OUT.tar.gz [--quality 75] [--shift 4]

`../shared/data` holds CIFAR-10 as libjpeg quality-75 files with 4:2:0 chroma subsampling, and the
original images are not here to compare with. This writes the same image-folder layout
(train|test/<class>/NNNN.png, names kept) with each image compressed again at the same settings,
on a block grid shifted by `--shift` pixels (reflect-padded, compressed, decoded, cropped back, and
stored losslessly), so the second loss does not simply repeat the first's quantisation. Training
the same recipe on both copies measures what one such compression costs; the per-channel
statistics it prints put the two losses side by side with the original's figures in the data's
README (the std shrinks as detail is lost).
"""

import argparse
import io
import os
import tarfile

import numpy as np
from PIL import Image

from keras_cifar.data.readers import CIFAR10_CLASSES, read_examples
from keras_cifar.data.sources import resolve_source

# ../shared/data/README.md: the original binary release's train split on [0, 1]
ORIGINAL_MEAN = (0.4914, 0.4822, 0.4465)
ORIGINAL_STD = (0.2470, 0.2435, 0.2616)


def compress_again(image, quality, shift):
    padded = np.pad(image, ((shift, 0), (shift, 0), (0, 0)), mode="reflect") if shift else image
    buffer = io.BytesIO()
    Image.fromarray(padded).save(buffer, format="JPEG", quality=quality, subsampling=2)
    again = np.ascontiguousarray(np.asarray(Image.open(buffer).convert("RGB"))[shift:, shift:])
    lossless = io.BytesIO()  # stored as PNG: the padded JPEG's size would be resized on reading
    Image.fromarray(again).save(lossless, format="PNG")
    return again, lossless.getvalue()


def _stats(images):
    pixels = np.concatenate(images).reshape(-1, 3).astype(np.float64) / 255.0
    return pixels.mean(axis=0), pixels.std(axis=0)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("source", help="the real data's archive (../shared/data/cifar10-jpeg.tar.gz)")
    parser.add_argument("out", help="the archive to write")
    parser.add_argument("--quality", type=int, default=75, help="JPEG quality (default 75, the source's)")
    parser.add_argument("--shift", type=int, default=4, help="pixels the block grid moves (default 4)")
    args = parser.parse_args(argv)
    if not 1 <= args.quality <= 100:
        parser.error(f"--quality must be 1..100, got {args.quality}")
    if not 0 <= args.shift < 8:
        parser.error(f"--shift must be 0..7 (pixels within an 8x8 block), got {args.shift}")

    source = resolve_source(args.source)
    if source.kind == "tfds":
        parser.error(f"{args.source!r} is not a local copy: give an archive or folder of CIFAR-10 files")
    before, after, errors = [], [], []
    with tarfile.open(args.out, "w:gz") as tar:
        for split in ("train", "test"):
            counts = dict.fromkeys(range(len(CIFAR10_CLASSES)), 0)
            for example_id, image, label in read_examples(source, split):
                again, data = compress_again(image, args.quality, args.shift)
                if split == "train":
                    before.append(image)
                    after.append(again)
                errors.append(np.mean((again.astype(np.float64) - image) ** 2))
                folder = f"{split}/{CIFAR10_CLASSES[label]}/"
                # an image folder's files keep their names; batch files' images are numbered per class
                name = (os.path.splitext(example_id)[0] if str(example_id).startswith(folder)
                        else f"{folder}{counts[label]:04d}") + ".png"
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
                counts[label] += 1
            print(f"{split}: {sum(counts.values())} images")
    rows = [("original (data README)", ORIGINAL_MEAN, ORIGINAL_STD), ("source", *_stats(before)),
            (f"source compressed again (q{args.quality}, shift {args.shift})", *_stats(after))]
    print("| train split | mean R, G, B | std R, G, B |\n|---|---|---|")
    for name, mean, std in rows:
        print(f"| {name} | {', '.join(f'{m:.4f}' for m in mean)} | {', '.join(f'{s:.4f}' for s in std)} |")
    print(f"root-mean-square change per pixel value, both splits: {np.sqrt(np.mean(errors)):.2f} of 255")
    print(f"wrote {args.out} ({os.path.getsize(args.out) / 1e6:.1f} MB)")


if __name__ == "__main__":
    main()
