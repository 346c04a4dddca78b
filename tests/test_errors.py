"""Every bad input ends in a one-paragraph message, no traceback, and exit code 2 (usage)
or 1 (everything else). `python -m tests.test_errors` rewrites docs/ERRORS.md from these
cases, with the messages the CLI prints today."""

import dataclasses
import os
import shutil
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

import keras_cifar
from keras_cifar.cli import cli
from keras_cifar.errors import KerasCifarError
from tests.cli_runner import assert_clean_error, run_cli
from tests.conftest import REPO


@dataclasses.dataclass
class Case:
    id: str
    what: str  # the input, as the table says it
    args: list  # `{tmp}`, `{data}`, `{run}` and `{tfds}` are filled in
    exit_code: int
    expect: str  # a fragment of the message


CASES = [
    Case("unknown-model", "`--model resnet_lit`", ["fit", "--model", "resnet_lit"], 2, "Did you mean 'resnet_lite'?"),
    Case("unknown-config-key", "config file with `epoch: 3`", ["fit", "--config", "{tmp}/typo.yaml"], 2,
         "Did you mean 'epochs'"),
    Case("wrong-type", "`--epochs ten`", ["fit", "--epochs", "ten"], 2, "'ten' is not a valid integer"),
    Case("zero-epochs", "`--epochs 0`", ["fit", "--epochs", "0"], 2, "0 is not in the range x>=1"),
    Case("zero-batch", "`--batch-size 0`", ["fit", "--batch-size", "0"], 2, "0 is not in the range x>=1"),
    Case("negative-batch", "`--batch-size -8`", ["fit", "--batch-size", "-8"], 2, "-8 is not in the range x>=1"),
    Case("negative-lr", "`--lr -0.01`", ["fit", "--lr", "-0.01"], 2, "-0.01 is not in the range x>0"),
    Case("val-split-1", "`--val-split 1`", ["fit", "--val-split", "1"], 2, "1.0 is not in the range 0<=x<1"),
    Case("bad-config-value", "config file with `lr: -1`", ["fit", "--config", "{tmp}/negative.yaml"], 2,
         "`lr` (learning rate) must be positive"),
    Case("batch-larger-than-data", "`--batch-size 1000` on 300 images",
         ["fit", "--model", "cnn", "--batch-size", "1000", "--data", "{data}", "--data-dir", "{tfds}",
          "--log-dir", "{tmp}/logs"], 2, "larger than the 300 training images. Lower --batch-size."),
    Case("missing-config", "`--config missing.yaml`", ["fit", "--config", "{tmp}/missing.yaml"], 2,
         "does not exist"),
    Case("invalid-yaml", "config file that is not YAML", ["fit", "--config", "{tmp}/broken.yaml"], 2,
         "is not valid YAML"),
    Case("missing-data", "`--data` path that does not exist",
         ["fit", "--data", "{tmp}/nowhere", "--data-dir", "{tfds}", "--log-dir", "{tmp}/logs"], 1,
         "does not exist. Known layouts:"),
    Case("corrupt-data", "`--data` archive that is truncated",
         ["fit", "--data", "{tmp}/truncated.tar.gz", "--data-dir", "{tfds}", "--log-dir", "{tmp}/logs"], 1,
         "truncated or corrupt"),
    Case("unknown-layout", "`--data` folder of another layout",
         ["fit", "--data", "{tmp}", "--data-dir", "{tfds}", "--log-dir", "{tmp}/logs"], 1,
         "matches no CIFAR-10 layout"),
    Case("missing-checkpoint", "`--checkpoint` that does not exist",
         ["evaluate", "--checkpoint", "{tmp}/none.keras"], 1, "does not exist"),
    Case("truncated-checkpoint", "`--checkpoint` truncated",
         ["evaluate", "--checkpoint", "{tmp}/truncated.keras", "--data", "{data}", "--data-dir", "{tfds}"], 1,
         "truncated, corrupt"),
    Case("not-a-checkpoint", "`--checkpoint` that is not a Keras file",
         ["evaluate", "--checkpoint", "{tmp}/typo.yaml", "--data", "{data}", "--data-dir", "{tfds}"], 1,
         "is not a Keras model file"),
    Case("other-class-count", "`--checkpoint` built for 5 classes",
         ["evaluate", "--checkpoint", "{tmp}/five.keras", "--data", "{data}", "--data-dir", "{tfds}"], 1,
         "was built for 5 classes; this data has 10"),
    Case("other-architecture", "`--resume` of a run whose checkpoint holds another model",
         ["fit", "--resume", "{tmp}/swapped"], 1, "holds a 'resnet_lite' model, not 'cnn'"),
    Case("no-runs", "`evaluate` with no run under `--log-dir`", ["evaluate", "--log-dir", "{tmp}/empty"], 1,
         "Train one with python cli.py fit, or pass --checkpoint"),
    Case("nothing-to-resume", "`--resume` with no run to resume", ["fit", "--resume", "--log-dir", "{tmp}/empty"],
         2, "no run to resume"),
    Case("resume-changes-run", "`--resume RUN --lr 0.1`", ["fit", "--resume", "{run}", "--lr", "0.1"], 2,
         "Cannot change lr when resuming"),
    Case("weights-wrong-model", "`--weights imagenet --model cnn`", ["fit", "--model", "cnn", "--weights", "imagenet"],
         2, "--weights applies to resnet18 only. Received: --model cnn, --weights imagenet"),
    Case("weights-wrong-model-in-file", "config file with `model: cnn` and `weights: imagenet`",
         ["fit", "--config", "{tmp}/weights.yaml"], 2,
         "`weights` applies to resnet18 only. Received: `model='cnn'`, `weights='imagenet'`"),
    Case("log-dir-is-a-file", "`--log-dir` that is a file",
         ["fit", "--model", "cnn", "--log-dir", "{tmp}/typo.yaml"], 2, "is a file"),
    Case("log-dir-not-writable", "`--log-dir` that cannot be created (below a file)",
         ["fit", "--model", "cnn", "--data", "{data}", "--data-dir", "{tfds}", "--log-dir", "{tmp}/typo.yaml/logs"],
         1, "Cannot create the log directory"),
    Case("no-cuda", "`--device cuda` without a GPU", ["fit", "--model", "cnn", "--device", "cuda"], 2,
         "--device cuda was requested, but PyTorch sees no CUDA GPU"),
    Case("fp16-on-cpu", "`--mixed-precision fp16` on a CPU",
         ["fit", "--model", "cnn", "--device", "cpu", "--mixed-precision", "fp16"], 2,
         "--mixed-precision fp16 needs a CUDA GPU; on the CPU use --mixed-precision bf16"),
    Case("predict-bad-files", "`predict` on a folder of 10 images, a text file, an empty file and a missing file",
         ["predict", "{data}/test/cat", "{tmp}/typo.yaml", "{tmp}/empty.png", "{tmp}/nothing.png", "--checkpoint",
          "{run}"], 1, "3 of 13 file(s) could not be read"),
    Case("negative-seed", "`--seed -1`", ["fit", "--seed", "-1"], 2, "-1 is not in the range 0<=x<=4294967295"),
    Case("plot-unwritable", "`plot -o` into a folder that does not exist",
         ["plot", "{run}", "-o", "{tmp}/no/such/folder/curves.png"], 1, "Cannot write"),
    Case("tensorboard-missing", "`tensorboard` on a folder that does not exist", ["tensorboard", "{tmp}/nowhere"], 2,
         "is not a folder"),
    # export, and predict on exported files
    Case("export-missing-checkpoint", "`export` of a checkpoint that does not exist",
         ["export", "{tmp}/none.keras"], 1, "does not exist"),
    Case("export-truncated-checkpoint", "`export` of a truncated checkpoint",
         ["export", "{tmp}/truncated.keras", "-o", "{tmp}/truncated.onnx"], 1, "truncated, corrupt"),
    Case("export-unknown-format", "`export --format tflite`", ["export", "{run}", "--format", "tflite"], 2,
         "'tflite' is not one of 'onnx', 'torch'"),
    Case("export-wrong-suffix", "`export --format torch -o model.onnx`",
         ["export", "{run}", "--format", "torch", "-o", "{tmp}/model.onnx"], 2, "--output must end in .pt2"),
    Case("export-unexportable-layer", "`export` of a model with a layer torch.export cannot capture",
         ["export", "{tmp}/unexportable.keras", "--format", "torch"], 1, "its layer 'branchy' (DataDependent)"),
    Case("predict-damaged-onnx", "`predict --checkpoint` with a damaged .onnx file",
         ["predict", "{data}/test/cat", "--checkpoint", "{tmp}/damaged.onnx"], 1, "not an ONNX file"),
    Case("predict-damaged-pt2", "`predict --checkpoint` with a damaged .pt2 file",
         ["predict", "{data}/test/cat", "--checkpoint", "{tmp}/damaged.pt2"], 1, "not a torch.export (.pt2) file"),
]


def make_inputs(tmp, data, run):
    """The files the cases refer to."""
    (tmp / "typo.yaml").write_text("model: cnn\nepoch: 3\n")
    (tmp / "negative.yaml").write_text("model: cnn\nlr: -1\n")
    (tmp / "broken.yaml").write_text("model: [cnn\n")
    (tmp / "weights.yaml").write_text("model: cnn\nweights: imagenet\n")
    (tmp / "empty").mkdir(exist_ok=True)
    (tmp / "empty.png").write_bytes(b"")
    archive = shutil.make_archive(str(tmp / "truncated"), "gztar", data)
    with open(archive, "r+b") as handle:
        handle.truncate(os.path.getsize(archive) // 2)
    best = Path(run) / "best.keras"
    (tmp / "truncated.keras").write_bytes(best.read_bytes()[: best.stat().st_size // 2])
    keras_cifar.create_model("cnn", num_classes=5).save(tmp / "five.keras")
    swapped = tmp / "swapped"
    shutil.copytree(run, swapped)
    state = (swapped / "state.json").read_text()
    checkpoint = swapped / __import__("json").loads(state)["checkpoint"]
    model = keras_cifar.create_model("resnet_lite")
    model.compile(optimizer="adam", loss="mse")
    model.save(checkpoint)
    # export
    from tests.test_export import unexportable_model

    unexportable_model().save(tmp / "unexportable.keras")
    (tmp / "damaged.onnx").write_bytes(best.read_bytes()[:1000])
    (tmp / "damaged.pt2").write_bytes(best.read_bytes()[:1000])


def fill(args, tmp, data, run, tfds):
    return [str(a).format(tmp=tmp, data=data, run=run, tfds=tfds) for a in args]


@pytest.fixture(scope="module")
def inputs(real_folder_small, tmp_path_factory):
    from keras_cifar.train.config import resolve_config
    from keras_cifar.train.trainer import fit

    tmp = tmp_path_factory.mktemp("errors")
    tfds = tmp / "tfds"
    config = resolve_config(None, dict(model="cnn", epochs=1, batch_size=30, data=str(real_folder_small),
                                       data_dir=str(tfds), log_dir=str(tmp / "runs")))
    run = fit(config, verbose=0, echo=lambda message: None).run_path
    make_inputs(tmp, real_folder_small, run)
    return dict(tmp=tmp, data=real_folder_small, run=run, tfds=tfds)


def invoke(args):
    return CliRunner().invoke(cli, args, prog_name="cli.py")


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_bad_input(case, inputs):
    result = invoke(fill(case.args, **inputs))
    assert isinstance(result.exception, SystemExit), result.exception  # no traceback
    assert result.exit_code == case.exit_code, result.output
    output = result.output + (result.stderr if hasattr(result, "stderr") else "")
    assert case.expect in output, output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines[-1].startswith("Error: ") and case.expect in lines[-1], result.stderr  # one paragraph, last


def test_real_processes_exit_with_these_codes(inputs):
    """The same through a real `python cli.py` process, for one usage error and one other error."""
    assert_clean_error(run_cli(*fill(CASES[0].args, **inputs)), 2, CASES[0].expect)
    missing = next(case for case in CASES if case.id == "missing-checkpoint")
    assert_clean_error(run_cli(*fill(missing.args, **inputs)), 1, missing.expect)


def test_library_errors_name_parameters_the_cli_names_flags_and_the_program(inputs, monkeypatch):
    """The library says `device='cuda'` and `fit(resume_path=...)`; the CLI says --device cuda and the
    command as typed: `python cli.py fit` or `keras-cifar fit`."""
    import torch

    from keras_cifar.errors import UsageError
    from keras_cifar.train.device import select_device, set_precision

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(UsageError, match=r"`device='cuda'` was requested.* Use `device='cpu'` or `device='auto'`"):
        select_device("cuda")
    with pytest.raises(UsageError, match=r"`mixed_precision='fp16'` needs a CUDA GPU"):
        set_precision("fp16", "cpu")
    with pytest.raises(KerasCifarError, match=r"Train one with `fit\(\)`, or pass `checkpoint`"):
        from keras_cifar.train.run_dir import latest_run

        latest_run(str(inputs["tmp"] / "empty"))
    args = fill(["evaluate", "--log-dir", "{tmp}/empty"], **inputs)
    for prog, typed in (("cli.py", "python cli.py fit"), ("keras-cifar", "keras-cifar fit"),
                        ("python -m keras_cifar.cli", "python -m keras_cifar.cli fit")):
        result = CliRunner().invoke(cli, args, prog_name=prog)
        assert f"Train one with {typed}, or pass --checkpoint (a run folder" in result.stderr, result.stderr


def test_a_model_without_a_config_is_a_usage_error(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_CIFAR_CONFIGS", str(tmp_path))
    result = invoke(["fit", "--model", "cnn"])
    assert result.exit_code == 2 and isinstance(result.exception, SystemExit)
    assert "Error: The model 'cnn' has no config:" in result.stderr
    assert "Pass a config file with --config" in result.stderr  # the flag, not the parameter `config_file`


def test_cli_errors_render_parameters_as_flags():
    from keras_cifar.cli import fit
    from keras_cifar.cli_errors import _flag_setting, _options

    options = _options(fit)
    assert _flag_setting(options["augment"], True) == "--augment"
    assert _flag_setting(options["augment"], False) == "--no-augment"
    assert _flag_setting(options["weights"], None) == "--weights none"
    assert _flag_setting(options["resume_path"], "/a b/run") == "--resume '/a b/run'"
    assert _flag_setting(options["batch_size"], 8) == "--batch-size 8"


def test_installed_command_names_itself(inputs):
    """The console script of the package (`keras-cifar`), a real process: hints name `keras-cifar`."""
    import subprocess

    script = Path(sys.executable).parent / "keras-cifar"
    if not script.is_file():
        pytest.skip(f"no console script at {script} (install the package)")
    result = subprocess.run([str(script), "evaluate", "--log-dir", str(inputs["tmp"] / "empty")],
                            capture_output=True, text=True, timeout=600)
    assert_clean_error(result, 1, "Train one with keras-cifar fit, or pass --checkpoint")
    assert "Usage: keras-cifar" in subprocess.run([str(script), "--help"], capture_output=True, text=True,
                                                  timeout=600).stdout
    result = run_cli("evaluate", "--log-dir", inputs["tmp"] / "empty")
    assert_clean_error(result, 1, "Train one with python cli.py fit, or pass --checkpoint")


def test_predict_still_predicts_the_good_images(inputs):
    case = next(case for case in CASES if case.id == "predict-bad-files")
    result = invoke(fill(case.args, **inputs))
    assert len([line for line in result.stdout.splitlines() if "%" in line]) == 10
    assert "typo.yaml: cannot read (not an image OpenCV can decode)" in result.stderr
    assert "nothing.png: cannot read (No such file or directory)" in result.stderr
    assert "empty.png: cannot read (not an image OpenCV can decode)" in result.stderr


def test_tensorboard_port_in_use(inputs):
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = invoke(["tensorboard", str(inputs["run"]), "--port", str(port)])
    assert isinstance(result.exception, SystemExit) and result.exit_code == 1
    assert f"TensorBoard could not start on 127.0.0.1:{port}" in result.stderr


def test_errors_doc_lists_every_case():
    doc = (REPO / "docs" / "ERRORS.md").read_text()
    for case in CASES:
        assert f"<!-- {case.id} -->" in doc, f"docs/ERRORS.md lacks {case.id}: python -m tests.test_errors"


def write_doc(path):
    import tempfile

    from tests.conftest import extract_subset

    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        data = extract_subset(folder / "data", 30, 10)
        from keras_cifar.train.config import resolve_config
        from keras_cifar.train.trainer import fit

        config = resolve_config(None, dict(model="cnn", epochs=1, batch_size=30, data=str(data),
                                           data_dir=str(folder / "tfds"), log_dir=str(folder / "runs")))
        run = fit(config, verbose=0, echo=lambda message: None).run_path
        make_inputs(folder, data, run)
        rows = []
        for case in CASES:
            result = invoke(fill(case.args, tmp=folder, data=data, run=run, tfds=folder / "tfds"))
            message = " ".join(line for line in result.stderr.splitlines() if line.startswith("Error"))
            message = message.replace(str(folder), "…").replace("|", "\\|")
            rows.append(f"| <!-- {case.id} --> {case.what} | {message} | {result.exit_code} |")
    header = [
        "# Errors and exit codes",
        "",
        "Every mistake a user can make ends in one paragraph on stderr and an exit code: **2** for usage",
        "errors (bad options or config values), **1** for everything else (data, checkpoints, files,",
        "training stopped by a NaN loss), **130** for Ctrl-C. No command prints a traceback for these.",
        "This table is generated from the test cases in `tests/test_errors.py`",
        "(`python -m tests.test_errors` rewrites it); paths are shortened to `…`.",
        "",
        "Training faults are covered by `tests/test_crash.py`: `kill -9` (rerun with `--resume`), Ctrl-C",
        "(exit 130, with the resume command), and a NaN or infinite loss (exit 1, naming the epoch and",
        "step; the last good checkpoint is kept).",
        "",
        "Writes the log folder refuses are covered by `tests/test_disk_full.py`. A full disk, a quota or a",
        "file-size limit (`ulimit -f`) while a checkpoint, `state.json`, `metrics.csv` or the TensorBoard",
        "events are written ends the run (exit 1), for example with `Error: Cannot write the checkpoint of",
        "epoch 2 in 'logs/cnn-…': No space left on device (332 KB free on that disk; a checkpoint of this",
        "run takes about 360 KB). Training stopped; the last committed epoch (1 of 3) is kept there. Make at",
        "least 360 KB free there, then resume with: python cli.py fit --resume logs/cnn-…`. Partial files",
        "are removed, and `--resume` continues once there is room. A read-only log folder (or run folder,",
        "when resuming) is found before any training: `Error: Cannot write a run folder in 'logs':",
        "Read-only file system. Nothing was trained. Make the folder writable, then run it again, or choose",
        "another --log-dir.`",
        "",
        "Data-parallel runs (`torchrun`) end every rank with exit code 1 and one line naming what was",
        "lost: a rank that died or stopped answering (`Error: Rank K has not answered for T s ...`), a",
        "collective that failed (with each rank's training step count), torchrun's store",
        "(`Error: Rank K: lost torchrun's store at ADDR:PORT ...`, when node 0's agent is gone) or a",
        "rank's own agent (`Error: Rank K: lost its torchrun agent (pid P) ...`). Each is found within",
        "`--dist-timeout`; the last completed epoch is kept for `--resume`. See",
        "[DISTRIBUTED.md](DISTRIBUTED.md#failures); `tests/test_distributed.py` and",
        "`tests/test_multinode.py` cover them.",
        "",
        "| input | message | exit code |",
        "|---|---|---|",
    ]
    Path(path).write_text("\n".join(header + rows) + "\n")


if __name__ == "__main__":
    write_doc(sys.argv[1] if len(sys.argv) > 1 else REPO / "docs" / "ERRORS.md")
