"""The shape of the code (issue 30): short modules, models independent of training, tests independent of bench/.

Cheap: parses the sources, runs none of them."""

import ast

from tests.conftest import REPO

MAX_LINES = 450



def _sources(folder):
    return sorted((REPO / folder).rglob("*.py"))


def _relative(path):
    return path.relative_to(REPO).as_posix()


def imported_modules(path):
    """Every module that `path` imports, at any depth: `import a.b`, `from a.b import c` (as `a.b` and
    `a.b.c`, since `c` may be a module), and `importlib.import_module("a.b")` with a literal name or an
    f-string that starts with one."""
    modules = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            modules.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            modules.add(node.module)
            modules.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Call) and _called_name(node.func) == "import_module" and node.args:
            name = node.args[0]
            if isinstance(name, ast.JoinedStr) and name.values:
                name = name.values[0]
            if isinstance(name, ast.Constant) and isinstance(name.value, str):
                modules.add(name.value)
    return modules


def _called_name(func):
    return func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)


def _in_package(module, package):
    return module == package or module.startswith(package + ".")


def long_modules():
    return {_relative(path) for path in _sources("keras_cifar") if len(path.read_text().splitlines()) > MAX_LINES}


def models_importing_train():
    return {_relative(path) for path in _sources("keras_cifar/models")
            if any(_in_package(module, "keras_cifar.train") for module in imported_modules(path))}


def bench_importers_in_tests():
    return {_relative(path) for path in _sources("tests")
            if any(_in_package(module, "bench") for module in imported_modules(path))}


def test_no_module_is_over_450_lines():
    assert long_modules() == set(), f"over {MAX_LINES} lines"


def test_models_do_not_import_training():
    assert models_importing_train() == set()


def test_tests_do_not_import_bench():
    assert bench_importers_in_tests() == set()


def test_the_checks_see_every_kind_of_import(tmp_path):
    source = tmp_path / "sample.py"
    source.write_text("import importlib\nimport bench.gpu_check\nfrom keras_cifar.train import optim\n"
                      "def f(name):\n    from bench import host_syncs\n"
                      "    return importlib.import_module(f'bench.{name}'), importlib.import_module('benchmark')\n")
    modules = imported_modules(source)
    assert {"bench.gpu_check", "keras_cifar.train.optim", "bench", "bench.host_syncs", "bench."} <= modules
    assert not _in_package("benchmark", "bench") and _in_package("bench.", "bench")


# The modules a reader opens to follow one training step of `cli.py fit` (docs/ARCHITECTURE.md):
# the command, the schema, the trainer that assembles the run, Adam's path through the optimizer
# package, the loss, the model's step, the per-step callbacks, the loader, and the data-parallel
# wrapper that a torchrun step adds.
STEP_PATH = (
    "keras_cifar/cli.py", "keras_cifar/train/run_config.py", "keras_cifar/train/trainer.py",
    "keras_cifar/optim/factory.py", "keras_cifar/optim/schedules.py", "keras_cifar/optim/torch_update.py",
    "keras_cifar/optim/adam.py", "keras_cifar/losses.py", "keras_cifar/models/classifier.py",
    "keras_cifar/models/step_runtime.py", "keras_cifar/models/graph_capture.py", "keras_cifar/train/callbacks.py",
    "keras_cifar/data/loader.py", "keras_cifar/train/data_parallel.py",
)


def test_one_training_step_reads_in_at_most_2400_lines():
    """Raised from 2,000 when the step's trackers, its logs read on demand and the run's time
    accounting came in (the reading path itself unchanged)."""
    lines = {path: len((REPO / path).read_text().splitlines()) for path in STEP_PATH}
    assert sum(lines.values()) <= 2400, lines
