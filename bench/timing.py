"""The one timing loop of the benchmarks: named programs in interleaved rounds, medians, a ratio table.

Round 0, 2, 4 ... run the programs in their order, rounds 1, 3, 5 ... reversed (A B C, then C B A),
so that drift of the machine (load, clock, heat) falls on every program alike; `warmup` rounds
run first and are not kept. Each program is a callable without arguments that returns what it
measured (seconds, or anything the caller reduces to seconds); the figures are medians over rounds.

    rounds = interleaved({"cli": run_cli, "tidy": run_tidy}, rounds=3)
    print(ratio_table(medians(rounds), base="cli", unit="s/epoch", scale=1))
"""

import statistics
import sys


def in_order(items, round_index):
    """`items` in their order on even rounds, reversed on odd ones."""
    items = list(items)
    return items if round_index % 2 == 0 else items[::-1]


def interleaved(programs, rounds, warmup=0, label=""):
    """Runs `programs` (name -> callable) for `warmup` + `rounds` rounds, alternating their order;
    -> {name: [result of each kept round]}, each list in round order."""
    results = {name: [] for name in programs}
    for index in range(warmup + rounds):
        for name in in_order(programs, index):
            result = programs[name]()
            if index >= warmup:
                results[name].append(result)
        kept = index - warmup + 1
        done = "warm-up" if kept <= 0 else f"round {kept}/{rounds}"
        print(f"  {label}{done} done ({', '.join(in_order(programs, index))})", file=sys.stderr, flush=True)
    return results


def medians(results, key=lambda value: value):
    """{name: median over rounds of key(result)}."""
    return {name: statistics.median(key(value) for value in values) for name, values in results.items()}


def ratio_table(figures, base, unit="s", scale=1.0, digits=2):
    """A markdown table: each program's figure (times `scale`, in `unit`) and its ratio to `base`'s
    (figure / base's figure)."""
    lines = [f"| program | {unit} | vs {base} |", "|---|---|---|"]
    for name, value in figures.items():
        lines.append(f"| {name} | {value * scale:.{digits}f} | {value / figures[base]:.2f}x |")
    return "\n".join(lines)
