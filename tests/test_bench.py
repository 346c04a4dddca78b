"""The lasting benchmarks and result scripts of bench/, run as the docs run them (`python -m bench.X`,
`bash bench/X.sh`) in subprocesses, on hand-made outputs or a slice of the real data: no test
imports the bench package (docs/TESTING.md)."""

import csv
import json
import os
import subprocess
import sys

import pytest

from tests.conftest import REPO


def bench(*args, timeout=600):
    """`python -m bench.<args>` from the checkout; -> the finished process (stdout, stderr)."""
    result = subprocess.run([sys.executable, "-m", *args], cwd=REPO, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


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


def test_results_seed_table_compares_means_over_runs(tmp_path):
    """bench.results (docs/RESULTS-LOG.md's seed tables): means and spreads over the seeds of each side,
    unfinished runs left out, and the gap with its standard error."""
    write_run(tmp_path / "pytorch" / "cnn", [0.60, 0.70], seed=0)
    write_run(tmp_path / "seeds" / "pytorch" / "cnn-seed1", [0.60, 0.60], seed=1)
    write_run(tmp_path / "seeds" / "keras" / "cnn-20260101-000000", [0.60, 0.66], seed=0)
    write_run(tmp_path / "seeds" / "keras" / "cnn-20260101-010000", [0.60, 0.62], seed=1)
    (tmp_path / "seeds" / "keras" / "cnn-20260101-020000").mkdir()  # unfinished: no summary.json
    lines = bench("bench.results", "--results", str(tmp_path)).stdout.splitlines()
    keras_row = next(line for line in lines if "| Keras | 0, 1" in line)
    torch_row = next(line for line in lines if "| PyTorch | 0, 1" in line)
    gap_row = next(line for line in lines if "Keras - PyTorch" in line and line.startswith("| cnn"))
    assert "| cnn | 2 | Keras | 0, 1 | 64.00 ± 2.83 |" in keras_row and "66.00 / 62.00" in keras_row
    assert "| 0, 1 | 65.00 ± 7.07 |" in torch_row
    # final: -1 point, standard error sqrt(2.83^2/2 + 7.07^2/2) = 5.39
    assert gap_row.split("|")[5].strip() == "**-1.00** ± 5.39"


def test_airbench_table_reads_both_programs_runs(tmp_path):
    """bench.airbench_table on hand-made outputs of the two programs: times to 90% and 94%, TTA,
    means over seeds (a longer schedule, keras-eN-seed*, and a run with other flags, keras-eN-VARIANT-seed*,
    apart), and the ablation's change against the recipe."""
    def keras_run(folder, seed, accuracies, tta, optimizer="sgd", model="airbench94"):
        run = tmp_path / folder / f"{model}-20261129-000000"
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
    keras_run("keras-muon-seed0", 0, [0.80, 0.91, 0.935], 0.945, optimizer="muon", model="airbench94_muon")
    keras_run("keras-muon-e2-seed0", 0, [0.80, 0.91], 0.93, optimizer="muon", model="airbench94_muon")
    keras_run("keras-muon-e2-seed1", 1, [0.80, 0.90], 0.92, optimizer="muon", model="airbench94_muon")
    keras_run("keras-muon-e2-eb500-seed0", 0, [0.70, 0.80], 0.85, optimizer="muon", model="airbench94_muon")
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
    lines = bench("bench.airbench_table", str(tmp_path)).stdout.splitlines()
    rows = [line for line in lines if line.startswith("| ")]
    # airbench94, 3 epochs: seed 0 at 90% after its 2nd epoch (25 s) and at 94% with the final TTA (38 s);
    # seed 1 at 90% only with the final TTA, never at 94%
    assert "| keras-cifar `airbench94` | 0 | 3 | 93.50 | 94.50 | 10 | 15 | 25 | 38 | 38 |" in rows
    assert "| keras-cifar `airbench94` | 1 | 3 | 89.00 | 93.00 | 10 | 15 | 38 | - | 38 |" in rows
    assert "| keras-cifar `airbench94` | **mean of 2** | | 91.25 | 93.75 | 10 | | 32 | 38 | 38 |" in rows
    assert "| keras-cifar `airbench94` | 0 | 4 | 95.00 | 96.00 | 10 | 15 | 35 | 48 | 48 |" in rows  # a longer schedule apart
    assert any(row.startswith("| keras-cifar `airbench95` | 0 | 3 | 95.00 | 96.00 | 10 | 15 | 25 |") for row in rows)
    assert any(row.startswith("| keras-cifar `airbench94_muon` (eb500) | 0 | 2 |") for row in rows)  # a variant apart
    assert any(row.startswith("| keras-cifar `airbench94_muon` | **mean of 2** | | 90.50 | 92.50 |") for row in rows)
    # airbench's own loop: whitening 1 s + 2 epochs of 9 + 1 to 90%; 94% only with TTA: all epochs (30) + TTA (4)
    assert "| airbench94, plain PyTorch | 0 | 3 | 93.00 | 95.00 | 9 | 10 | 21 | 34 | 34 |" in rows
    for program in ("airbench95, plain PyTorch", "airbench94_muon, plain PyTorch", "airbench94_muon, plain PyTorch (zerobias)"):
        assert any(row.startswith(f"| {program} | 0 |") for row in rows), program
    assert "| no-lookahead | 2 | 89.00 | 90.00 | +1.00 | -1.00 |" in rows  # the ablation against the recipe


@pytest.mark.parametrize("recipe, stage, command, name", [
    ("muon", "keras", "cli.py fit --config configs/airbench94_muon.yaml", "keras-muon-e7-seed3"),
    ("muon", "torch", "-m pytorch_reference.airbench_muon_torch --device cpu --threads 2 --precision bf16", "torch-muon-e7-seed3"),
    ("airbench95", "keras", "cli.py fit --config configs/airbench95.yaml", "keras-95-e7-seed3"),
    ("airbench95", "torch", "-m pytorch_reference.airbench_torch --variant airbench95 --device cpu", "torch-95-e7-seed3"),
])
def test_airbench_recipe_script_names_runs_by_recipe_and_schedule(tmp_path, recipe, stage, command, name):
    """bench/airbench_runs.sh: EPOCHS reaches either program and the run's name, which bench.airbench_table groups by."""
    python = tmp_path / "python"
    python.write_text(f'#!/bin/sh\necho "$@" >> {tmp_path}/calls\n')
    python.chmod(0o755)
    env = {**os.environ, "PYTHON": str(python), "RECIPE": recipe, "STAGE": stage, "EPOCHS": "7", "DATA": "D"}
    subprocess.run(["bash", "bench/airbench_runs.sh", str(tmp_path / "out"), "3"], env=env, check=True,
                   capture_output=True, cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    call = (tmp_path / "calls").read_text()
    assert call.startswith(command) and all(flag in call.split(" --") for flag in ["seed 3", "data D", "epochs 7"])
    assert f"{tmp_path}/out/{name}" in call
    assert (tmp_path / "out" / f"{name}.log").exists()


def test_epochs_times_whole_processes_of_the_cli_and_the_tidy_loop(real_folder_small, data_dir):
    """bench.epochs, PERFORMANCE.md's end-to-end row, on a slice of the real data: 3- and 1-epoch processes of
    each program, the steady epoch their wall-time difference halved; every round listed; the breakdown of an
    epoch and of each process from the run's own summary.json (the order alternates over rounds: the
    step_levers test). With --baseline (here this same checkout) another checkout's cli.py fit runs in the same
    rounds and gets a table of its own."""
    result = bench("bench.epochs", "--models", "cnn", "--rounds", "1", "--data", str(real_folder_small),
                   "--data-dir", str(data_dir), "--baseline", str(REPO))
    assert ("cnn: round 1/1 done (cli 3 epochs, cli 1 epoch, tidy 3 epochs, tidy 1 epoch, baseline 3 epochs, "
            "baseline 1 epoch)") in result.stderr
    rows = [[cell.strip().strip("*") for cell in line.split("|")[1:-1]] for line in result.stdout.splitlines()
            if line.startswith("| cnn |")]
    headline, (each_round,) = rows[0], [row for row in rows if row[1] == "1" and row[2] == "cli"]
    cli, tidy, ratio = (float(cell) for cell in headline[2:5])  # on 300 images a difference can come out < 0
    bounds = [(tidy + a) / (cli + b) for a in (-0.005, 0.005) for b in (-0.005, 0.005)]  # the cells are rounded
    assert min(bounds) - 0.005 <= ratio <= max(bounds) + 0.005
    assert headline[9] in ("channels_last, fused", "channels_last, foreach", "contiguous, fused", "contiguous, foreach")
    cli3, cli1, cli_epoch, tidy3, tidy1, tidy_epoch = (float(cell) for cell in each_round[3:9])
    assert cli_epoch == pytest.approx((cli3 - cli1) / 2, abs=0.01) and cli_epoch == pytest.approx(cli, abs=0.01)
    assert tidy_epoch == pytest.approx((tidy3 - tidy1) / 2, abs=0.01)
    assert float(each_round[12]) >= 0  # the load average beside the round
    (parts,) = [row for row in rows if len(row) == 12 and row[1] != "1"]  # the breakdown of an epoch
    seconds = [float(cell) for cell in parts[1:]]
    assert all(value >= 0 for value in seconds[:-3]) and seconds[2] > 0  # the checkpoint's .keras took time
    assert seconds[-2] == pytest.approx(sum(seconds[:-2]), abs=0.02)  # the parts add up to the epoch
    phases = {row[1]: [float(cell) for cell in row[2:]] for row in rows if len(row) == 5}
    assert phases["epochs 2.."][0] == 0 and phases["epochs 2.."][1] > 0
    for one, three, share in phases.values():
        assert share == pytest.approx((three - one) / 2, abs=0.01)
    assert abs(phases["unaccounted (between the phases)"][1]) < 0.5
    (compared,) = [row for row in rows if len(row) == 6]  # this checkout against the baseline
    this, name, baseline, against = float(compared[1]), compared[2], float(compared[3]), float(compared[4])
    assert this == cli and name.startswith(f"{REPO.name} (")
    bounds = [(baseline + a) / (this + b) for a in (-0.005, 0.005) for b in (-0.005, 0.005)]
    assert min(bounds) - 0.005 <= against <= max(bounds) + 0.005


def test_step_levers_times_every_variant_and_the_tidy_loop_in_turns():
    variants = ["product", "Keras CallbackList", "Keras thread pool", "generic step", "Keras Adam", "no graph capture",
                "tidy PyTorch loop"]
    result = bench("bench.step_levers", "--models", "cnn", "--steps", "3", "--rounds", "1")
    assert f"cnn: warm-up done ({', '.join(variants)})" in result.stderr
    assert f"cnn: round 1/1 done ({', '.join(reversed(variants))})" in result.stderr
    rows = {line.split("|")[1].strip(): line for line in result.stdout.splitlines() if line.startswith("| ")}
    assert set(variants) <= set(rows)
    assert rows["product"].rstrip().endswith("| 1.00x |")
    for label in variants:
        assert float(rows[label].split("|")[2]) > 0  # ms per step, measured


@pytest.mark.parametrize("module", ["bench.airbench_epochs", "bench.throughput", "bench.export_times"])
def test_the_other_lasting_benchmarks_start(module):
    """The benchmarks too long to smoke-run here (docs/PERFORMANCE.md names what each measures)."""
    assert "--help" in bench(module, "--help").stdout
