"""`cli.py fit`, `evaluate`, `predict`, `models`, `tensorboard`, end to end on real data."""

import json
import os
import re
import subprocess
import sys
import time
import urllib.request

import keras
import numpy as np
import pytest
import yaml

from keras_cifar.data import load_cifar
from keras_cifar.train.evaluation import confusion_matrix
from tests.cli_runner import run_cli
from tests.conftest import REPO


@pytest.fixture(scope="module")
def trained(real_folder_2k, tmp_path_factory):
    """`fit --model cnn` for 2 epochs on 2,000 real training images (1,000 test images).

    Batch size 4 and per-channel standardization: with the original batch of 32, 2 epochs of
    2,000 images are only 126 steps, too few for this CNN to leave the 20s reliably."""
    root = tmp_path_factory.mktemp("e2e")
    result = run_cli("fit", "--model", "cnn", "--epochs", 2, "--batch-size", 4, "--normalize", "--seed", 0,
                     "--data", real_folder_2k, "--data-dir", root / "tfds", "--log-dir", root / "logs",
                     "--device", "cpu")  # the tests below expect the CPU, also on a machine with a GPU
    assert result.returncode == 0, result.stderr[-3000:]
    runs = os.listdir(root / "logs")
    assert len(runs) == 1 and re.fullmatch(r"cnn-\d{8}-\d{6}", runs[0])
    return {"root": root, "run": root / "logs" / runs[0], "stdout": result.stdout, "data": real_folder_2k}


def test_fit_prints_device_progress_and_total_time(trained):
    out = trained["stdout"]
    assert "Device: cpu" in out
    assert "Data: train 2,000, test 1,000 images, 10 classes" in out
    assert re.search(r"Epoch 1/2\n500/500 - ", out) and "Epoch 2/2" in out
    assert re.search(r"Total time: \d+m \d\ds", out)


def test_run_folder_contents(trained):
    run = trained["run"]
    for name in ("config.yaml", "best.keras", "last.keras", "metrics.csv", "summary.json", "state.json",
                 "confusion_matrix.png"):
        assert (run / name).is_file(), name
    assert any(name.startswith("events.out.tfevents") for name in os.listdir(run))
    assert os.listdir(run / "train") and os.listdir(run / "validation")
    config = yaml.safe_load((run / "config.yaml").read_text())
    assert config["model"] == "cnn" and config["epochs"] == 2 and config["batch_size"] == 4
    assert config["lr"] == 1e-3 and config["normalize"] is True  # from configs/cnn.yaml and the flags
    rows = (run / "metrics.csv").read_text().splitlines()
    assert rows[0].startswith("epoch,loss,accuracy,val_loss,val_accuracy") and len(rows) == 3
    summary = json.loads((run / "summary.json").read_text())
    assert summary["epochs"] == 2 and summary["device"] == "cpu" and summary["train_time_s"] > 0
    assert (summary["steps_per_epoch"], summary["train_images_per_epoch"]) == (500, 2000)  # the last batch kept
    assert summary["final_accuracy"] >= 0.30, f"test accuracy {summary['final_accuracy']:.3f} after 2 epochs"
    assert summary["best_accuracy"] >= summary["final_accuracy"] or summary["best_epoch"] == 2


def test_evaluate_equals_an_independent_recount(trained):
    result = run_cli("evaluate", "--checkpoint", trained["run"], "--json", "--data-dir", trained["root"] / "tfds")
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout)
    # Recount from raw predictions of the same checkpoint, without keras-cifar's evaluation code.
    import keras_cifar  # noqa: F401

    model = keras.saving.load_model(trained["run"] / "best.keras")
    data = load_cifar(str(trained["data"]), data_dir=str(trained["root"] / "tfds"))
    predictions = np.asarray(model.predict(data.test.images, batch_size=100, verbose=0)).argmax(axis=1)
    labels = data.test.labels
    assert report["total"] == len(labels) == 1000
    assert report["correct"] == int((predictions == labels).sum())
    assert report["accuracy"] == pytest.approx((predictions == labels).mean(), abs=1e-12)
    for index, name in enumerate(data.class_names):
        mask = labels == index
        assert report["per_class"][name]["accuracy"] == pytest.approx((predictions[mask] == index).mean(), abs=1e-12)
    expected = np.zeros((10, 10), int)
    for true, predicted in zip(labels, predictions):
        expected[true, predicted] += 1
    assert report["confusion_matrix"] == expected.tolist()
    assert confusion_matrix(labels, predictions, 10).tolist() == expected.tolist()
    summary = json.loads((trained["run"] / "summary.json").read_text())
    assert report["accuracy"] == pytest.approx(summary["best_accuracy"], abs=1e-6)


def test_evaluate_defaults_to_latest_run_and_prints_tables(trained):
    result = run_cli("evaluate", "--log-dir", trained["root"] / "logs", "--data-dir", trained["root"] / "tfds")
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"Checkpoint: {trained['run'] / 'best.keras'}" in result.stdout
    assert re.search(r"Accuracy: \d+\.\d\d% \(\d+ of 1,000\)", result.stdout)
    assert "airplane" in result.stdout and "Confusion matrix" in result.stdout


def test_predict_files_and_folders(trained, tmp_path):
    import cv2

    folder = trained["data"] / "test" / "ship"
    files = sorted(folder.glob("*.jpg"))[:3]
    big_gray = tmp_path / "big_gray.png"
    cv2.imwrite(str(big_gray), cv2.resize(cv2.imread(str(files[0]), cv2.IMREAD_GRAYSCALE), (100, 80)))
    result = run_cli("predict", *files, big_gray, "--checkpoint", trained["run"] / "best.keras", "--top-k", 3,
                     "--json")
    assert result.returncode == 0, result.stderr[-3000:]
    output = json.loads(result.stdout)
    assert [p["file"] for p in output["predictions"]] == [str(f) for f in files] + [str(big_gray)]
    model = keras.saving.load_model(trained["run"] / "best.keras")
    images = np.stack([cv2.cvtColor(cv2.imread(str(f)), cv2.COLOR_BGR2RGB) for f in files])
    probabilities = keras.ops.convert_to_numpy(keras.ops.softmax(model.predict(images, verbose=0)))
    for prediction, expected in zip(output["predictions"], probabilities):
        top = prediction["top"]
        assert len(top) == 3 and top[0]["probability"] >= top[1]["probability"] >= top[2]["probability"]
        assert top[0]["probability"] == pytest.approx(expected.max(), abs=1e-5)
        assert top[0]["class"] == load_classes()[expected.argmax()]
    listing = run_cli("predict", folder, "--checkpoint", trained["run"])
    assert listing.returncode == 0
    assert len(listing.stdout.strip().splitlines()) == len(list(folder.glob("*.jpg")))


def load_classes():
    from keras_cifar.data import CIFAR10_CLASSES

    return CIFAR10_CLASSES


def test_models_table():
    result = run_cli("models")
    assert result.returncode == 0
    for row in ("cnn  *25,700", "inception_lite  *138,154", "resnet_lite  *23,382", "googlenet  *6,318,570",
                "resnet18  *11,181,642"):
        assert re.search(row, result.stdout), row
    assert "Task2GoogleNet" in result.stdout and "32x32 -> 224x224" in result.stdout


def test_every_command_explains_itself():
    from click.testing import CliRunner

    from keras_cifar.cli import cli

    assert "Usage: cli.py [OPTIONS] COMMAND" in run_cli("--help").stdout  # a real process, once
    for command in ("fit", "evaluate", "predict", "models", "tensorboard", "plot"):
        result = CliRunner().invoke(cli, [command, "--help"], prog_name="cli.py")
        assert result.exit_code == 0 and "Usage:" in result.output, command
    fit_help = CliRunner().invoke(cli, ["fit", "--help"], prog_name="cli.py").output
    for option in ("--model", "--config", "--epochs", "--batch-size", "--lr", "--optimizer", "--momentum",
                   "--nesterov", "--weight-decay", "--schedule", "--label-smoothing", "--augment",
                   "--mixed-precision", "--seed", "--data", "--data-dir", "--val-split", "--weights", "--log-dir",
                   "--device", "--resume"):
        assert option in fit_help, option


def test_tensorboard_serves_the_run(trained):
    process = subprocess.Popen(
        [sys.executable, str(REPO / "cli.py"), "tensorboard", str(trained["run"]), "--port", "0"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=REPO,
    )
    try:
        url = None
        deadline = time.time() + 120
        while time.time() < deadline and url is None:
            line = process.stdout.readline()
            if not line and process.poll() is not None:
                break
            match = re.search(r"(http://127\.0\.0\.1:\d+/)", line)
            url = match.group(1) if match else None
        assert url, "tensorboard printed no URL"
        scalars = None
        for _ in range(60):  # the server loads event files in the background
            try:
                with urllib.request.urlopen(f"{url}data/plugin/scalars/scalars?run=.&tag=Test_accuracy%2Fepoch",
                                            timeout=10) as response:
                    scalars = json.loads(response.read())
                break
            except urllib.error.HTTPError:
                time.sleep(1)
        assert scalars is not None
        metrics = [line.split(",") for line in (trained["run"] / "metrics.csv").read_text().splitlines()[1:]]
        assert [step for _, step, _ in scalars] == [0, 1]
        assert [value for _, _, value in scalars] == pytest.approx([100 * float(m[4]) for m in metrics], abs=1e-4)
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_export_then_predict_on_the_exported_files(trained, tmp_path):
    """`export` beside the checkpoint (onnx) and to -o (torch); `predict` gives the checkpoint's answers."""
    import shutil

    from click.testing import CliRunner

    from keras_cifar.cli import cli

    run = tmp_path / trained["run"].name
    shutil.copytree(trained["run"], run)
    runner = CliRunner()
    onnx = runner.invoke(cli, ["export", str(run)], prog_name="cli.py")
    assert onnx.exit_code == 0, onnx.output
    assert onnx.output.startswith(f"Wrote {run / 'best.onnx'} (") and (run / "best.onnx").is_file()
    pt2 = runner.invoke(cli, ["export", str(run), "--format", "torch", "-o", str(tmp_path / "m.pt2")],
                        prog_name="cli.py")
    assert pt2.exit_code == 0 and (tmp_path / "m.pt2").is_file(), pt2.output
    files = [str(f) for f in sorted((trained["data"] / "test" / "ship").glob("*.jpg"))[:3]]

    def predictions(checkpoint):
        result = runner.invoke(cli, ["predict", *files, "--checkpoint", str(checkpoint), "--json", "--top-k", 10],
                               prog_name="cli.py")
        assert result.exit_code == 0, result.output
        return json.loads(result.output)["predictions"]

    expected = predictions(run / "best.keras")
    for exported in (run / "best.onnx", tmp_path / "m.pt2"):
        for got, want in zip(predictions(exported), expected, strict=True):
            assert got["file"] == want["file"]
            assert [p["class"] for p in got["top"]] == [p["class"] for p in want["top"]]
            assert [p["probability"] for p in got["top"]] == pytest.approx([p["probability"] for p in want["top"]],
                                                                            abs=1e-5)


def test_export_help_says_what_serving_needs():
    from click.testing import CliRunner

    from keras_cifar.cli import cli

    result = CliRunner().invoke(cli, ["export", "--help"], prog_name="cli.py")
    assert result.exit_code == 0
    for fragment in ("--format [onnx|torch]", "onnxruntime", "torch.export.load", "uint8", "any N", "--output"):
        assert fragment in result.output, (fragment, result.output)
