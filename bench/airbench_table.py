"""The airbench recipes' tables for docs/RESULTS.md and RESULTS-LOG.md, from the runs of bench/airbench_runs.sh.

    python -m bench.airbench_table OUT_DIR

Reads OUT_DIR/keras[-muon|-95][-eN][-VARIANT]-seedS/<run>/ (summary.json, metrics.csv),
OUT_DIR/torch[-muon|-95][-eN][-VARIANT]-seedS.json (pytorch_reference/airbench_torch.py,
pytorch_reference/airbench_muon_torch.py)
and OUT_DIR/ablation-*/<run>/, and prints markdown tables: one group of seeds per name, a VARIANT
(a run with other flags, e.g. keras-muon-e7-eb500-seed0) named in its label. Times
are wall-clock seconds from the first training step, counting every epoch's test evaluation
for both programs (airbench's own count leaves those out; its column is given as well).
"""

import csv
import glob
import json
import os
import re
import statistics
import sys


def _run_folder(parent):
    runs = sorted(glob.glob(os.path.join(parent, "*", "summary.json")))
    return os.path.dirname(runs[-1]) if runs else None


def _first(rows, threshold, key, time_key, tta=None, total=None):
    """Time at the end of the first epoch whose accuracy reached `threshold`; else, when only the
    final TTA evaluation reached it, the whole run with that evaluation (`total`), as airbench counts."""
    for row in rows:
        if row[key] >= threshold:
            return row[time_key]
    return total if tta is not None and tta >= threshold else None


def keras_run(folder):
    with open(os.path.join(folder, "summary.json")) as handle:
        summary = json.load(handle)
    with open(os.path.join(folder, "metrics.csv")) as handle:
        rows = [{k: float(v) for k, v in row.items() if v != ""} for row in csv.DictReader(handle)]
    target = summary.get("target") or {}
    tta = summary["final_accuracy"] if summary.get("tta") else None
    total = (summary["elapsed_s"] or 0) + (summary.get("tta_time_s") or 0)
    return {
        "seed": summary["config"]["seed"],
        "recipe": "airbench94_muon" if summary["config"].get("optimizer") == "muon" else summary["config"]["model"],
        "epochs": summary["epochs"],
        "accuracy": summary["final_accuracy_without_tta"] if summary.get("tta") else summary["final_accuracy"],
        "tta_accuracy": summary["final_accuracy"] if summary.get("tta") else None,
        "epoch_s": statistics.median(row["epoch_time_s"] for row in rows[2:]) if len(rows) > 2 else None,
        "first_epoch_s": rows[0]["epoch_time_s"],
        "time_to_90": _first(rows, 0.90, "val_accuracy", "elapsed_s", tta, total),
        "time_to_94": target.get("elapsed_s") if target.get("reached") else _first(rows, 0.94, "val_accuracy",
                                                                                   "elapsed_s", tta, total),
        "total_s": total,
        "prepare_s": summary.get("prepare_s"),
        "first_step_s": summary.get("first_step_s"),
        "device": summary.get("device_name"),
    }


def torch_run(path):
    with open(path) as handle:
        report = json.load(handle)
    rows, elapsed = [], report.get("whiten_init_s", 0.0)
    for row in report["epochs"]:
        elapsed += row["train_time_s"] + row.get("eval_time_s", 0.0)
        rows.append({**row, "elapsed_s": elapsed})
    tta = report.get("tta_acc")
    total = elapsed + (report.get("tta_time_s") or 0.0)
    return {
        "seed": report["config"]["seed"],
        "epochs": len(rows),
        "accuracy": rows[-1]["test_acc"] if rows else None,
        "tta_accuracy": tta,
        "epoch_s": statistics.median(r["train_time_s"] + r.get("eval_time_s", 0.0) for r in rows[2:])
        if len(rows) > 2 else None,
        "first_epoch_s": rows[0]["train_time_s"] + rows[0].get("eval_time_s", 0.0) if rows else None,
        "time_to_90": _first(rows, 0.90, "test_acc", "elapsed_s", tta, total),
        "time_to_94": _first(rows, 0.94, "test_acc", "elapsed_s", tta, total),
        "total_s": total,
        "airbench_time_to_94": report.get("time_to_94"),
    }


def _fmt(value, kind="s"):
    if value is None:
        return "-"
    if kind == "%":
        return f"{100 * value:.2f}"
    return f"{value:.0f}"


def _mean(values):
    values = [v for v in values if v is not None]
    return statistics.mean(values) if values else None


NAME = re.compile(r"^(keras|torch)(-muon|-95)?(-e\d+)?-?(.*)$")  # program, recipe, schedule, variant
TORCH_PROGRAMS = {None: "airbench94", "-muon": "airbench94_muon", "-95": "airbench95"}


def _group(path):
    """A run's group and its variant: "keras-muon-e7-eb500-seed0" -> ("keras-muon-e7-eb500", "eb500")."""
    name = re.sub(r"-seed\d+(\.json)?$", "", os.path.basename(path))
    return name, NAME.match(name).group(4)


def _label(base, variant):
    return f"{base} ({variant})" if variant else base


def results_table(out_dir):
    lines = ["| program | seed | epochs | test acc. % | with TTA % | s/epoch (median of 3rd on) | first epoch s | "
             "time to 90% s | time to 94% s | total s |", "|---" * 10 + "|"]
    groups = []
    by_recipe = {}
    for folder in _folders(out_dir, "keras-"):
        run = keras_run(folder)
        _, variant = _group(os.path.dirname(folder))
        by_recipe.setdefault((run["recipe"], run["epochs"], variant), []).append(run)
    by_name = {}
    for path in sorted(glob.glob(os.path.join(out_dir, "torch-*seed*.json"))):
        by_name.setdefault(_group(path), []).append(torch_run(path))
    programs = [(_label(f"keras-cifar `{recipe}`", variant), runs)
                for (recipe, _, variant), runs in sorted(by_recipe.items())]
    programs += [(_label(f"{TORCH_PROGRAMS[NAME.match(name).group(2)]}, plain PyTorch", variant), runs)
                 for (name, variant), runs in sorted(by_name.items())]
    for label, runs in programs:
        groups.append((label, runs))
        for run in runs:
            lines.append(f"| {label} | {run['seed']} | {run['epochs']} | {_fmt(run['accuracy'], '%')} | "
                         f"{_fmt(run['tta_accuracy'], '%')} | {_fmt(run['epoch_s'])} | {_fmt(run['first_epoch_s'])} | "
                         f"{_fmt(run['time_to_90'])} | {_fmt(run['time_to_94'])} | {_fmt(run['total_s'])} |")
        if len(runs) > 1:
            lines.append(f"| {label} | **mean of {len(runs)}** | | {_fmt(_mean(r['accuracy'] for r in runs), '%')} | "
                         f"{_fmt(_mean(r['tta_accuracy'] for r in runs), '%')} | "
                         f"{_fmt(_mean(r['epoch_s'] for r in runs))} | | "
                         f"{_fmt(_mean(r['time_to_90'] for r in runs))} | "
                         f"{_fmt(_mean(r['time_to_94'] for r in runs))} | {_fmt(_mean(r['total_s'] for r in runs))} |")
    return "\n".join(lines), groups


def _folders(out_dir, prefix):
    folders = [_run_folder(parent) for parent in sorted(glob.glob(os.path.join(out_dir, prefix + "*")))
               if os.path.isdir(parent)]
    return [folder for folder in folders if folder]


def ablation_table(out_dir):
    runs = {os.path.basename(os.path.dirname(folder)).removeprefix("ablation-"): keras_run(folder)
            for folder in _folders(out_dir, "ablation-")}
    if not runs:
        return ""
    base = runs.get("recipe")
    lines = ["| variant | epochs | test acc. % | with TTA % | TTA's gain, points | change against the recipe (with TTA), points |",
             "|---" * 6 + "|"]
    for name, run in sorted(runs.items(), key=lambda item: item[0] != "recipe"):
        change = "" if base is None or name == "recipe" or run["tta_accuracy"] is None else \
            f"{100 * (run['tta_accuracy'] - base['tta_accuracy']):+.2f}"
        tta_gain = "" if run["tta_accuracy"] is None else f"{100 * (run['tta_accuracy'] - run['accuracy']):+.2f}"
        lines.append(f"| {name} | {run['epochs']} | {_fmt(run['accuracy'], '%')} | {_fmt(run['tta_accuracy'], '%')} | "
                     f"{tta_gain} | {change} |")
    return "\n".join(lines)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print(__doc__)
        return 2
    table, _ = results_table(argv[0])
    print(table)
    ablation = ablation_table(argv[0])
    if ablation:
        print()
        print(ablation)
    return 0


if __name__ == "__main__":
    sys.exit(main())
