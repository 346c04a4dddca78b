"""Checks of .ci/wheel_check.sh (standard library and the installed package only).

    check_installed.py archives REPO WHEEL WHEEL_FROM_SDIST SDIST   what the built files hold
    check_installed.py extract ARCHIVE FOLDER                        a few real images as an image folder
    check_installed.py run REPO VENV LOG_DIR                         the installed package and its run
"""

import sys
import tarfile
import zipfile
from pathlib import Path


def archives(repo, wheel, wheel_from_sdist, sdist):
    repo = Path(repo)
    configs = sorted(p.name for p in (repo / "configs").glob("*.yaml"))
    assert configs, "no configs/*.yaml in the checkout"
    for path in (wheel, wheel_from_sdist):
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
            packaged = sorted(n.split("/")[-1] for n in names if n.startswith("keras_cifar/configs/"))
            assert packaged == configs, f"{path}: configs {packaged}, expected {configs}"
            for name in configs:
                assert archive.read(f"keras_cifar/configs/{name}") == (repo / "configs" / name).read_bytes(), name
            assert "keras_cifar/keras_internals.py" in names
            stray = [n for n in names if n.split("/")[0] in ("bench", "gpu", "pytorch_reference", "tests", "configs")
                     or n.endswith(("originals.py", "torch_loop.py"))]
            assert not stray, f"{path}: not part of the package: {stray}"
    with zipfile.ZipFile(wheel) as a, zipfile.ZipFile(wheel_from_sdist) as b:
        assert sorted(a.namelist()) == sorted(b.namelist()), "the sdist builds another wheel"
    with tarfile.open(sdist) as archive:
        names = [n.split("/", 1)[-1] for n in archive.getnames()]
        for name in configs:
            assert f"configs/{name}" in names, f"{sdist} lacks configs/{name}"
    print(f"archives: {len(configs)} configs in the wheel, the sdist and the wheel built from the sdist")


def extract(archive, folder, per_class_train=8, per_class_test=8):
    """The first images per class and split of the real CIFAR-10 JPEG archive."""
    limits = {"train": per_class_train, "test": per_class_test}
    counts = {}
    with tarfile.open(archive) as tar:
        for member in tar:
            parts = member.name.split("/")
            if not member.isfile() or len(parts) != 3 or parts[0] not in limits:
                continue
            key = (parts[0], parts[1])
            if counts.get(key, 0) >= limits[parts[0]]:
                continue
            counts[key] = counts.get(key, 0) + 1
            target = Path(folder, *parts)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(tar.extractfile(member).read())
    assert len(counts) == 20, f"expected 10 classes in train and test, found {sorted(counts)}"
    print(f"extract: {sum(counts.values())} real images into {folder}")


def run(repo, venv, log_dir):
    import yaml

    import keras_cifar
    from keras_cifar.models import list_models
    from keras_cifar.train.config import configs_dir, resolve_config, to_dict

    repo, venv = Path(repo).resolve(), Path(venv).resolve()
    package = Path(keras_cifar.__file__).resolve()
    assert venv in package.parents, f"keras_cifar imported from {package}, not from the fresh venv {venv}"
    assert venv in configs_dir().resolve().parents, f"configs read from {configs_dir()}, not from the package"
    assert repo not in package.parents
    # The run of `keras-cifar fit --model cnn --epochs 1`: its config is configs/cnn.yaml plus the flags.
    (run_dir,) = [p for p in Path(log_dir).iterdir() if p.is_dir()]
    resolved = yaml.safe_load((run_dir / "config.yaml").read_text())
    expected = yaml.safe_load((repo / "configs" / "cnn.yaml").read_text())
    for key, value in expected.items():
        if key != "epochs":  # --epochs 1
            assert resolved[key] == value, f"{key}: run has {resolved[key]!r}, configs/cnn.yaml {value!r}"
    assert resolved["epochs"] == 1 and resolved["train_images"] == 64
    assert (run_dir / "summary.json").is_file() and (run_dir / "best.keras").is_file()
    # Every model resolves to its own config file, as shipped in the package.
    for model in list_models():
        config = to_dict(resolve_config(None, {"model": model}))
        for key, value in yaml.safe_load((repo / "configs" / f"{model}.yaml").read_text()).items():
            assert config[key] == value, f"{model}: {key} resolves to {config[key]!r}, configs has {value!r}"
    print(f"run: keras_cifar from {package.parent}, configs from {configs_dir()}; {run_dir.name} used configs/cnn.yaml")


if __name__ == "__main__":
    {"archives": archives, "extract": extract, "run": run}[sys.argv[1]](*sys.argv[2:])
