"""The result scripts of bench/ on small real data: what docs/RESULTS.md is built from."""

import csv
import importlib
import json
import os
import subprocess

import numpy as np
import pytest


def load_script(name):
    """A bench script as the module `python -m bench.<name>` runs (bench/ is a package of the checkout)."""
    return importlib.import_module(f"bench.{name}")


def test_divergence_starts_equal_and_reports_every_checkpoint(real_folder_small, data_dir):
    from keras_cifar.data import load_cifar

    divergence = load_script("divergence")
    rows = list(divergence.diverge("cnn", load_cifar(str(real_folder_small), str(data_dir)), total_steps=2,
                                   test_images=50, checkpoints=2))
    assert [row["step"] for row in rows] == [0, 1, 2]
    first, last = rows[0], rows[-1]
    assert first["distance"]["torch"] == 0
    assert first["distance"]["keras"] < 1e-6  # the same weights, up to float32 rounding
    assert 1e-9 < first["distance"]["torch+ulp"] < 1e-6  # perturbed by about one ulp
    assert first["differ"]["keras"] == 0 and first["accuracy"]["keras"] == first["accuracy"]["torch"]
    assert 0 < last["distance"]["keras"] < 1e-3  # two equal steps: 2e-5 here; 6e-3 with Keras's own Adam
    assert last["test_images"] == 50 and last["batch_size"] == 32


def write_run(folder, accuracies, seed=None):
    folder.mkdir(parents=True)
    with open(folder / "metrics.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, ["epoch", "loss", "accuracy", "val_accuracy", "epoch_time_s"])
        writer.writeheader()
        for epoch, value in enumerate(accuracies, 1):
            writer.writerow({"epoch": epoch, "loss": 1.0, "accuracy": 0.5, "val_accuracy": value, "epoch_time_s": 1})
    (folder / "summary.json").write_text(json.dumps({"seed": seed}))
    if seed is not None:
        (folder / "config.yaml").write_text(f"seed: {seed}\n")


def test_seed_table_compares_means_over_runs(tmp_path, capsys):
    results = load_script("results")
    write_run(tmp_path / "pytorch" / "cnn", [0.60, 0.70], seed=0)
    write_run(tmp_path / "seeds" / "pytorch" / "cnn-seed1", [0.60, 0.60], seed=1)
    write_run(tmp_path / "seeds" / "keras" / "cnn-20260101-000000", [0.60, 0.66], seed=0)
    write_run(tmp_path / "seeds" / "keras" / "cnn-20260101-010000", [0.60, 0.62], seed=1)
    (tmp_path / "seeds" / "keras" / "cnn-20260101-020000").mkdir()  # unfinished: no summary.json
    means = results.seed_table(str(tmp_path))
    lines = capsys.readouterr().out.strip().splitlines()
    keras_row = next(line for line in lines if "| Keras | 0, 1" in line)
    torch_row = next(line for line in lines if "| PyTorch | 0, 1" in line)
    gap_row = next(line for line in lines if "Keras - PyTorch" in line)
    assert "| cnn | 2 | Keras | 0, 1 | 64.00 ± 2.83 |" in keras_row and "66.00 / 62.00" in keras_row
    assert "| 0, 1 | 65.00 ± 7.07 |" in torch_row
    # final: -1 point, standard error sqrt(2.83^2/2 + 7.07^2/2) = 5.39
    assert gap_row.split("|")[5].strip() == "**-1.00** ± 5.39"
    assert means == {"cnn": pytest.approx(0.64)}
    assert results.spread([0.5]) == "50.00"


@pytest.mark.parametrize("model_name", ["cnn", "resnet_lite"])
def test_keras_gradients_are_pytorch_gradients_up_to_rounding(model_name, real_folder_small, data_dir):
    """One real batch: the Keras port's float32 gradients are as close to PyTorch's float64 ones as
    PyTorch's own float32 gradients are (a few 1e-6). inception_lite is left out: on some batches
    rounding flips a max-pool choice between near-equal values, in PyTorch too (bench/gradients.py)."""
    import torch

    from keras_cifar.data import load_cifar

    gradients = load_script("gradients")
    dataset = load_cifar(str(real_folder_small), str(data_dir))
    pick = np.random.default_rng(0).permutation(len(dataset.train.labels))[:32]
    errors = gradients.gradient_errors(model_name, torch.as_tensor(dataset.train.images[pick]),
                                       torch.as_tensor(dataset.train.labels[pick]).long())
    assert errors["torch"] < 2e-5 and errors["torch+ulp"] < 2e-5
    assert 0 < errors["keras"] < 2e-5


def test_tidy_loop_trains_like_the_reference_loop_and_evaluates_every_image(real_folder_small, data_dir):
    """The benchmarks' yardstick takes the same first step as the originals' loop from the same
    weights (whatever its memory format and optimizer implementation), and its evaluation counts
    every test image once."""
    import torch

    from pytorch_reference.torch_loop import ReferenceRun, TidyRun
    from keras_cifar.data import load_cifar

    data = load_cifar(str(real_folder_small), str(data_dir))
    for memory_format, implementation in (("channels_last", "fused"), ("contiguous", "foreach")):
        tidy = TidyRun("cnn", data.train, data.test, 32, memory_format=memory_format, implementation=implementation)
        reference = ReferenceRun("cnn")
        reference.module.load_state_dict(tidy.module.state_dict())
        order = torch.randperm(len(data.train), generator=torch.Generator().manual_seed(0))[:32]
        reference.train_step(torch.as_tensor(data.train.images)[order], torch.as_tensor(data.train.labels)[order])
        tidy.train_epoch(max_steps=1)
        for ours, theirs in zip(tidy.module.parameters(), reference.module.parameters()):
            torch.testing.assert_close(ours.detach().contiguous(), theirs.detach(), rtol=1e-4, atol=1e-6)
    loss, accuracy = tidy.evaluate()
    with torch.no_grad():
        tidy.module.eval()
        predictions = tidy.module(tidy.test_x).argmax(1)
    assert accuracy == int((predictions == tidy.test_y).sum()) / len(tidy.test_y)
    assert np.isfinite(loss)


def test_fast_table_reads_both_programs_runs(tmp_path):
    """bench.fast_table on hand-made outputs of the two programs: times to 90% and 94%, TTA,
    means over seeds (a longer schedule, keras-eN-seed*, and a run with other flags, keras-eN-VARIANT-seed*,
    apart), and the ablation's change against the recipe."""
    fast_table = load_script("fast_table")

    def keras_run(folder, seed, accuracies, tta, optimizer="sgd", model="airbench94"):
        run = tmp_path / folder / "fast-20261129-000000"
        run.mkdir(parents=True)
        rows = [{"epoch": i + 1, "val_accuracy": a, "epoch_time_s": 10.0 + (5 if i == 0 else 0),
                 "elapsed_s": 10.0 * (i + 1) + 5} for i, a in enumerate(accuracies)]
        with open(run / "metrics.csv", "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
        reached = tta >= 0.94
        summary = {"config": {"seed": seed, "optimizer": optimizer, "model": model}, "epochs": len(rows), "tta": True,
                   "final_accuracy": tta, "final_accuracy_without_tta": accuracies[-1],
                   "elapsed_s": rows[-1]["elapsed_s"],
                   "tta_time_s": 3.0, "prepare_s": 1.0, "first_step_s": 2.0, "device_name": "cpu",
                   "target": {"reached": reached, "elapsed_s": rows[-1]["elapsed_s"] + 3.0 if reached else None}}
        (run / "summary.json").write_text(json.dumps(summary))

    keras_run("keras-seed0", 0, [0.80, 0.91, 0.935], 0.945)
    keras_run("keras-seed1", 1, [0.70, 0.85, 0.89], 0.93)
    keras_run("keras-e4-seed0", 0, [0.70, 0.85, 0.92, 0.95], 0.96)
    keras_run("keras-muon-seed0", 0, [0.80, 0.91, 0.935], 0.945, optimizer="muon")
    keras_run("keras-muon-e2-seed0", 0, [0.80, 0.91], 0.93, optimizer="muon")
    keras_run("keras-muon-e2-seed1", 1, [0.80, 0.90], 0.92, optimizer="muon")
    keras_run("keras-muon-e2-eb500-seed0", 0, [0.70, 0.80], 0.85, optimizer="muon")
    keras_run("keras-95-seed0", 0, [0.80, 0.91, 0.95], 0.96, model="airbench95")
    keras_run("ablation-recipe", 0, [0.8, 0.9], 0.91)
    keras_run("ablation-no-lookahead", 0, [0.8, 0.89], 0.9)
    (tmp_path / "torch-seed0.json").write_text(json.dumps({
        "config": {"seed": 0}, "whiten_init_s": 1.0, "tta_acc": 0.95, "tta_time_s": 4.0, "time_to_94": 30.0,
        "epochs": [{"epoch": 1, "train_time_s": 9.0, "eval_time_s": 1.0, "test_acc": 0.85},
                   {"epoch": 2, "train_time_s": 9.0, "eval_time_s": 1.0, "test_acc": 0.92},
                   {"epoch": 3, "train_time_s": 8.0, "eval_time_s": 1.0, "test_acc": 0.93}]}))
    for name in ["torch-muon-seed0", "torch-muon-e3-seed0", "torch-muon-zerobias-seed0", "torch-95-seed0"]:
        (tmp_path / f"{name}.json").write_text((tmp_path / "torch-seed0.json").read_text())
    table, groups = fast_table.results_table(str(tmp_path))
    # fast 3 epochs (2 seeds), fast 4 epochs, airbench95, fast_muon 2 epochs (2 seeds, and the variant apart),
    # 3 epochs, airbench94, airbench95, airbench94_muon (and its shorter schedule and variant apart)
    assert [(label, len(runs)) for label, runs in groups] == [
        ("keras-cifar `airbench94`", 2), ("keras-cifar `airbench94`", 1), ("keras-cifar `airbench95`", 1),
        ("keras-cifar `fast_muon`", 2), ("keras-cifar `fast_muon` (eb500)", 1), ("keras-cifar `fast_muon`", 1),
        ("airbench94, plain PyTorch", 1), ("airbench95, plain PyTorch", 1), ("airbench94_muon, plain PyTorch", 1),
        ("airbench94_muon, plain PyTorch", 1), ("airbench94_muon, plain PyTorch (zerobias)", 1)]
    assert [run["tta_accuracy"] for run in groups[3][1]] == [0.93, 0.92]
    assert groups[2][1][0]["time_to_90"] == 25.0  # airbench95: its 2nd epoch
    keras_runs, longer_runs, torch_runs = groups[0][1], groups[1][1], groups[6][1]
    assert groups[5][1][0]["time_to_94"] == 38.0 and groups[8][1][0]["time_to_94"] == 34.0
    assert longer_runs[0]["epochs"] == 4 and longer_runs[0]["time_to_90"] == 35.0  # its 3rd epoch
    assert [run["time_to_90"] for run in keras_runs] == [25.0, 38.0]  # seed 1: only with the final TTA
    assert keras_runs[0]["time_to_94"] == 38.0 and keras_runs[1]["time_to_94"] is None
    assert keras_runs[0]["epoch_s"] == 10.0 and keras_runs[0]["first_epoch_s"] == 15.0
    assert keras_runs[0]["total_s"] == 38.0
    assert torch_runs[0]["time_to_90"] == 21.0  # whitening 1 + 2 epochs of 9 + 1
    assert torch_runs[0]["time_to_94"] == 34.0  # reached only with TTA: all epochs (30) + the TTA pass
    assert torch_runs[0]["epoch_s"] == 9.0
    assert "mean of 2" in table and "| 93.75 |" in table  # (94.5 + 93.0) / 2 with TTA
    ablation = fast_table.ablation_table(str(tmp_path))
    assert "| no-lookahead | 2 | 89.00 | 90.00 | +1.00 | -1.00 |" in ablation


@pytest.mark.parametrize("recipe, stage, command, name", [
    ("muon", "keras", "cli.py fit --config configs/airbench94_muon.yaml", "keras-muon-e7-seed3"),
    ("muon", "torch", "-m bench.airbench_muon_torch --device cpu --threads 2 --precision bf16", "torch-muon-e7-seed3"),
    ("airbench95", "keras", "cli.py fit --config configs/airbench95.yaml", "keras-95-e7-seed3"),
    ("airbench95", "torch", "-m bench.airbench_torch --variant airbench95 --device cpu", "torch-95-e7-seed3"),
])
def test_airbench_recipe_script_names_runs_by_recipe_and_schedule(tmp_path, recipe, stage, command, name):
    """bench/fast_recipe.sh: EPOCHS reaches either program and the run's name, which bench.fast_table groups by."""
    python = tmp_path / "python"
    python.write_text(f'#!/bin/sh\necho "$@" >> {tmp_path}/calls\n')
    python.chmod(0o755)
    env = {**os.environ, "PYTHON": str(python), "RECIPE": recipe, "STAGE": stage, "EPOCHS": "7", "DATA": "D"}
    subprocess.run(["bash", "bench/fast_recipe.sh", str(tmp_path / "out"), "3"], env=env, check=True,
                   capture_output=True, cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    call = (tmp_path / "calls").read_text()
    assert call.startswith(command) and all(flag in call.split(" --") for flag in ["seed 3", "data D", "epochs 7"])
    assert f"{tmp_path}/out/{name}" in call
    assert (tmp_path / "out" / f"{name}.log").exists()


def test_fast_epochs_takes_steady_epochs_of_both_and_compares_per_image(monkeypatch, capsys):
    """bench.fast_epochs: each program's steady epoch is the mean of its epochs 2 and 3 (the CLI's
    from the steps of its elapsed_s column, airbench's training + evaluation), rounds alternate
    which goes first, and the images/s ratio counts each side's images per epoch."""
    fast_epochs = load_script("fast_epochs")
    calls = []
    monkeypatch.setattr(fast_epochs, "keras_epochs",
                        lambda *args, recipe: calls.append("keras") or ([150.0, 262.0, 370.0], 50000))
    monkeypatch.setattr(fast_epochs, "airbench_epochs", lambda *args, recipe: calls.append("airbench") or [
        {"train_time_s": 130.0, "eval_time_s": 9.0, "steps": 48},
        {"train_time_s": 100.0, "eval_time_s": 8.0, "steps": 48},
        {"train_time_s": 104.0, "eval_time_s": 8.0, "steps": 48}])
    rows = [fast_epochs.measure("data", "bf16", 2), fast_epochs.measure("data", "bf16", 2, airbench_first=True)]
    assert calls == ["keras", "airbench", "airbench", "keras"]
    assert rows[0]["keras"] == 110.0 and rows[0]["airbench"] == 110.0 and rows[0]["airbench_images"] == 49152
    summary = fast_epochs.print_table(rows, "bf16", "test machine")
    assert summary["ratio_epoch"] == 1.0
    assert summary["ratio_rate"] == pytest.approx(50000 / 49152)
    assert "| s per epoch | 110.0 | 110.0 | 1.00 |" in capsys.readouterr().out
    recipes = []
    monkeypatch.setattr(fast_epochs, "keras_epochs", lambda *args, recipe: recipes.append(recipe) or (
        [150.0, 262.0, 370.0], 50000))
    monkeypatch.setattr(fast_epochs, "airbench_epochs", lambda *args, recipe: recipes.append(recipe) or [
        {"train_time_s": 130.0, "eval_time_s": 9.0, "steps": 25}] * 3)
    muon = fast_epochs.measure("data", "bf16", 2, recipe="muon")
    assert recipes == ["muon", "muon"] and muon["airbench_images"] == 50000  # 25 steps of 2000
    fast_epochs.print_table([muon], "bf16", "test machine", "muon")
    assert "| | cli.py fit (Keras, airbench94_muon.yaml) | airbench94_muon, plain PyTorch | ratio |" in capsys.readouterr().out


def test_fast_epochs_reads_the_cli_runs_wall_column(monkeypatch, tmp_path):
    """The whole epoch, checkpoint and log writes included (`wall_s`), not the time-to-accuracy clock."""
    fast_epochs = load_script("fast_epochs")

    def fake_run(command, **kwargs):
        run = os.path.join(command[command.index("--log-dir") + 1], "fast-20261129-000000")
        os.makedirs(run)
        with open(os.path.join(run, "metrics.csv"), "w") as file:
            file.write("epoch,val_accuracy,elapsed_s,wall_s\n1,0.5,120.0,120.5\n2,0.6,229.0,230.0\n3,0.7,339.5,341.0\n")
        with open(os.path.join(run, "summary.json"), "w") as file:
            json.dump({"train_images_per_epoch": 49152}, file)
        return subprocess.CompletedProcess(command, 0, "", "")

    monkeypatch.setattr(fast_epochs.subprocess, "run", fake_run)
    assert fast_epochs.keras_epochs("data", "bf16") == ([120.5, 230.0, 341.0], 49152)


def test_epochs_steady_epoch_of_both_sides_over_alternating_rounds(monkeypatch, capsys):
    """bench.epochs: the CLI's steady epoch from its wall_s column (epochs 2-3), the tidy loop's
    mean of epochs 2-3, rounds alternating which runs first, the table the median of the rounds."""
    epochs = load_script("epochs")
    calls = []
    cli_runs = iter([[30.0, 50.0, 70.0], [31.0, 53.0, 75.0], [29.0, 47.0, 65.0]])
    monkeypatch.setattr(epochs, "cli_fit_epochs", lambda args, *rest: calls.append(("cli", args)) or (
        next(cli_runs), 50000))
    monkeypatch.setattr(epochs, "tidy_epochs", lambda *args: calls.append(("tidy",)) or {
        "times": [25.0, 22.0, 22.0], "memory_format": "channels_last", "implementation": "fused"})
    rounds = [epochs.measure("cnn", 32, "data", "cpu", tidy_first=index % 2 == 1) for index in range(3)]
    assert [call[0] for call in calls] == ["cli", "tidy", "tidy", "cli", "cli", "tidy"]
    assert calls[0][1] == ["--model", "cnn", "--batch-size", "32"]
    assert [r["cli"] for r in rounds] == [20.0, 22.0, 18.0]
    (row,) = epochs.summarize(rounds)
    assert (row["cli"], row["tidy"]) == (20.0, 22.0) and row["ratio"] == pytest.approx(1.1)
    epochs.print_table([row], "test machine")
    assert "| cnn | 32 | 20.0 | 22.0 | 1.10 | 1.10, 1.00, 1.22 | channels_last, fused |" in capsys.readouterr().out


@pytest.mark.parametrize("stage", ["muon", "95"])
def test_gpu_session_smoke_on_cpu_without_tensorflow(stage, real_folder_small, tmp_path, without_tensorflow):
    """bench/gpu_session.sh, the prepared GPU session, as its header's CPU smoke run: both
    programs of the muon (or 95) stage on a slice of the real data, TensorFlow unavailable as
    on the GPU machine, and the runs collected into runs.tgz. (The fast stage's two programs run
    in bench/gpu_first.sh's CPU mode, tests/test_gpu_first.py; the stages share the rest.)"""
    import sys
    import tarfile

    from tests import data_formats as fmt
    from tests.conftest import REPO

    data = fmt.tar_folder(str(real_folder_small), str(tmp_path / "slice.tar.gz"), ".")
    out = tmp_path / "out"
    env = dict(os.environ, **without_tensorflow, OUT=str(out), DEVICE="cpu", SEEDS="0", DATA=data,
               RUNS=str(tmp_path / "runs"), PYTHON=sys.executable,
               FIT_ARGS="--epochs 1 --batch-size 64 --eval-batch-size 100 --mixed-precision none --train-images 128",
               AIRBENCH_ARGS="--epochs 1 --batch-size 64 --train-images 128")
    result = subprocess.run(["bash", str(REPO / "bench" / "gpu_session.sh"), stage], env=env, cwd=tmp_path,
                            capture_output=True, text=True, timeout=900)
    log = (out / "session.log").read_text()
    assert result.returncode == 0, log[-3000:]
    assert "without TFDS" in log and "Traceback" not in log
    with tarfile.open(out / "runs.tgz") as tar:
        names = tar.getnames()
    tag, recipe, program = {"airbench94": ("", "airbench94", "airbench94"), "muon": ("-muon", "airbench94_muon", "airbench94_muon"),
                            "95": ("-95", "airbench95", "airbench95")}[stage]
    assert any(n.startswith(f"./keras{tag}-seed0/") and n.endswith("summary.json") for n in names), names
    assert any(n.startswith(f"./keras{tag}-seed0/") and n.endswith("metrics.csv") for n in names), names
    assert f"./torch{tag}-seed0.json" in names and not any(n.endswith(".keras") for n in names)
    assert f"| keras-cifar `{recipe}` | 0 | 1 |" in log and f"| {program}, plain PyTorch | 0 | 1 |" in log


def test_jpeg_again_writes_the_same_layout_once_more_compressed(real_folder_small, tmp_path, capsys):
    from keras_cifar.data.readers import read_examples
    from keras_cifar.data.sources import resolve_source

    jpeg_again = load_script("jpeg_again")
    out = tmp_path / "again.tar.gz"
    jpeg_again.main([str(real_folder_small), str(out)])
    printed = capsys.readouterr().out
    assert "train: 300 images" in printed and "test: 100 images" in printed

    def by_name(path, split):
        return {os.path.splitext(i)[0]: (image, label) for i, image, label in read_examples(resolve_source(path), split)}

    for split in ("train", "test"):
        source, again = by_name(str(real_folder_small), split), by_name(str(out), split)
        assert sorted(again) == sorted(source)  # the same names in the same class folders
        for name, (image, label) in source.items():
            assert again[name][1] == label
            # read back exactly as compressed: 32x32, nothing resized or compressed a third time
            np.testing.assert_array_equal(again[name][0], jpeg_again.compress_again(image, 75, 4)[0])
        change = np.stack([again[name][0].astype(float) - source[name][0] for name in source])
        assert 2 < np.sqrt(np.mean(change**2)) < 15  # a few levels of 255: one more JPEG's loss
    with pytest.raises(SystemExit):
        jpeg_again.main([str(real_folder_small), str(out), "--shift", "8"])
    with pytest.raises(SystemExit):
        jpeg_again.main(["cifar10", str(out)])  # TFDS's dataset, not files it can read


def test_step_levers_times_every_variant_and_the_tidy_loop_in_turns():
    from click.testing import CliRunner

    step_levers = load_script("step_levers")
    result = CliRunner().invoke(step_levers.main, ["--models", "cnn", "--steps", "3", "--rounds", "1"])
    assert result.exit_code == 0, result.output
    rows = {line.split("|")[1].strip(): line for line in result.output.splitlines() if line.startswith("| ")}
    assert set(step_levers.VARIANTS) <= set(rows)
    assert rows["product"].rstrip().endswith("| 1.00x |")
    for label in step_levers.VARIANTS:
        assert float(rows[label].split("|")[2]) > 0  # ms per step, measured


def test_tta_batch_times_every_batch_size_on_a_saved_checkpoint(real_folder_small, data_dir, tmp_path, capsys):
    """bench.tta_batch: one warm-up and `rounds` timed TTA passes per batch size on a .keras
    checkpoint, the same accuracy at every size, a row per size; bad sizes are refused."""
    import keras_cifar as kc

    tta_batch = load_script("tta_batch")
    path = tmp_path / "fast.keras"
    kc.create_model("airbench94", widths=(8, 8, 8)).save(path)
    times, accuracy = tta_batch.main([str(path), "--data", str(real_folder_small), "--data-dir", str(data_dir),
                                      "--batch-sizes", "7,50",
                                      "--rounds", "3", "--test-images", "60"])
    assert list(times) == [7, 50] and all(len(seconds) == 3 and min(seconds) > 0 for seconds in times.values())
    assert accuracy[7] == pytest.approx(accuracy[50], abs=1 / 60)
    out = capsys.readouterr().out
    assert "| 7 |" in out and "| 50 |" in out
    with pytest.raises(SystemExit):
        tta_batch.main([str(path), "--batch-sizes", "0,50"])


def test_frozen_gradient_times_both_variants_in_turns_and_restores_the_bias():
    """bench.frozen_gradient: `rounds` x `steps` timed steps with the whitening bias taking a
    gradient and not; the bias requires gradients again afterwards; a row per variant."""
    import torch

    import keras_cifar as kc

    frozen_gradient = load_script("frozen_gradient")
    model = kc.create_model("airbench94", widths=(8, 8, 8))
    model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
    images = torch.as_tensor(np.random.default_rng(0).integers(0, 256, (16, 32, 32, 3), dtype=np.uint8))
    labels = torch.as_tensor(np.arange(16) % 10)
    times = frozen_gradient.measure(model, images, labels, rounds=2, steps=2)
    assert {name: len(seconds) for name, seconds in times.items()} == {"gradient": 4, "no gradient": 4}
    assert model.get_layer("whiten").bias.value.requires_grad
    text = frozen_gradient.table(times, 16)
    assert "| gradient |" in text and "| no gradient |" in text and "| 1.000 |" in text
    with pytest.raises(SystemExit):
        frozen_gradient.main(["--rounds", "0"])
