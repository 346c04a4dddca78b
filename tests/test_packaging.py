"""The package as `pip install .` builds it: the configs inside, nothing of bench/, gpu/,
pytorch_reference/ or tests/, every subpackage listed; the checkout's programs run as modules."""

import re
import shutil
import subprocess
import sys
import zipfile

import pytest
import setuptools

from tests.conftest import REPO


def listed_packages():
    block = re.search(r"^packages = \[(.*?)\]", (REPO / "pyproject.toml").read_text(), re.M | re.S).group(1)
    return sorted(re.findall(r'"([\w.]+)"', block))


def test_pyproject_lists_every_subpackage():
    found = setuptools.find_packages(str(REPO), include=["keras_cifar", "keras_cifar.*"])
    assert listed_packages() == sorted(found + ["keras_cifar.configs"])
    text = (REPO / "pyproject.toml").read_text()
    assert '"keras_cifar.configs" = "configs"' in text and '"keras_cifar.configs" = ["*.yaml"]' in text


def test_configs_are_found_in_the_package_or_beside_it(tmp_path):
    from keras_cifar.train.config_files import _configs_beside, configs_dir

    installed = tmp_path / "site-packages" / "keras_cifar"
    (installed / "configs").mkdir(parents=True)
    assert _configs_beside(installed) == installed / "configs"  # wheel or sdist install
    checkout = tmp_path / "checkout" / "keras_cifar"
    checkout.mkdir(parents=True)
    assert _configs_beside(checkout) == tmp_path / "checkout" / "configs"  # editable, or no install
    assert configs_dir() == REPO / "configs"


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    """The wheel of a copy of the package's sources (the checkout's build/ is left alone)."""
    source = tmp_path_factory.mktemp("source")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source / name)
    for folder in ("keras_cifar", "configs"):
        shutil.copytree(REPO / folder, source / folder, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    dist = tmp_path_factory.mktemp("dist")
    result = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                             "-w", str(dist), str(source)], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    (path,) = dist.glob("keras_cifar-*.whl")
    with zipfile.ZipFile(path) as archive:
        return {name: archive.read(name) for name in archive.namelist()}


def test_the_wheel_ships_every_config_byte_for_byte(wheel):
    configs = sorted((REPO / "configs").glob("*.yaml"))
    assert len(configs) >= 9
    packaged = sorted(name for name in wheel if name.startswith("keras_cifar/configs/"))
    assert packaged == [f"keras_cifar/configs/{path.name}" for path in configs]
    for path in configs:
        assert wheel[f"keras_cifar/configs/{path.name}"] == path.read_bytes()


def test_the_wheel_holds_the_package_only(wheel):
    tops = {name.split("/")[0] for name in wheel}
    assert tops == {"keras_cifar", "keras_cifar-0.1.0.dist-info"}
    assert "keras_cifar/keras_internals.py" in wheel and "keras_cifar/cli.py" in wheel
    assert not [name for name in wheel if name.endswith(("/originals.py", "/torch_loop.py"))]
    metadata = wheel["keras_cifar-0.1.0.dist-info/METADATA"].decode()
    assert "Requires-Dist: keras>=3.15.1" in metadata
    assert "keras-cifar = keras_cifar.cli:main" in wheel["keras_cifar-0.1.0.dist-info/entry_points.txt"].decode()


def test_the_checkouts_folders_are_packages_of_the_checkout_not_of_the_install():
    listed = listed_packages()
    for folder in ("bench", "gpu", "pytorch_reference"):
        assert (REPO / folder / "__init__.py").is_file()
        assert not [name for name in listed if name.split(".")[0] == folder]
        for script in (REPO / folder).glob("*.py"):
            assert "sys.path" not in script.read_text(), f"{folder}/{script.name} edits sys.path: run it with python -m"
    assert not (REPO / "keras_cifar" / "originals.py").exists()
    assert not (REPO / "keras_cifar" / "torch_loop.py").exists()
    from pytorch_reference import originals, torch_loop  # noqa: F401  (importable as the tests and bench/ do)


@pytest.mark.parametrize("module", ["pytorch_reference.train_reference", "bench.epochs"])
def test_the_checkouts_programs_run_as_modules(module):
    result = subprocess.run([sys.executable, "-m", module, "--help"], cwd=REPO,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0 and "--" in result.stdout, result.stderr[-3000:]
