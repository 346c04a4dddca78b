"""What an offline GPU machine lacks of keras-cifar's dependencies, for gpu/gpu_prepare.sh's bundle.

On the GPU machine, with the Python that will run keras-cifar (standard library only, nothing
imported; a batch job can run it from the checkout):
    python3 gpu/gpu_bundle.py probe > machine.json
Then, on a machine with internet (gpu/gpu_prepare.sh runs these):
    python gpu/gpu_bundle.py requirements pyproject.toml [--machine machine.json] [--have "torch numpy ..."]
        what the GPU machine must install, one requirement a line
    python gpu/gpu_bundle.py missing REPORT [--machine machine.json] [--have ...]
        of the distributions that `pip install --dry-run --report REPORT` resolved for those
        requirements, the ones the machine lacks, as name==version: the wheels to gather
    python gpu/gpu_bundle.py target machine.json
        its Python version (major.minor) and CPU, as TARGET_PYTHON and TARGET_ARCH take them
    python gpu/gpu_bundle.py has NAME [--machine machine.json] [--have ...]
        exits with status 0 when the machine is known to have the distribution NAME

--have lists what the machine has without a probe: names, or name==version (names alone are
taken to satisfy any version). Without --machine or --have nothing is known: every requirement
is listed, as for an empty machine, and stderr says so.

Never listed: torch (the machine's own, built for its CUDA, is kept), torchvision (it would pull
the torch it was built for; gpu_prepare.sh adds it on request), TensorFlow with TFDS and
TensorBoard (`fit --no-tensorboard` and local data need none of them) and Matplotlib (only the
TensorBoard summaries and `plot` draw).
"""

import argparse
import importlib.metadata
import importlib.util
import json
import os
import platform
import re
import sys

NOT_INSTALLED = {"torch", "torchvision", "tensorflow", "tensorflow-cpu", "tensorflow-datasets", "tensorboard",
                 "importlib-resources", "matplotlib"}
# Other distributions of the same module: any of them satisfies the requirement.
ALTERNATIVES = {"opencv-python-headless": ("opencv-python", "opencv-contrib-python", "opencv-contrib-python-headless"),
                "keras": ("keras-nightly",)}  # the next Keras release, as the module `keras`
# The module of each requirement, for a module importable without a distribution's metadata (built
# from source, as some GPU images do with OpenCV): present, version unknown.
MODULES = {"keras": "keras", "click": "click", "pyyaml": "yaml", "numpy": "numpy", "opencv-python-headless": "cv2",
           "torch": "torch", "torchvision": "torchvision", "pip": "pip"}


def name(requirement):
    """The normalised distribution name of a requirement ("PyYAML>=6" -> "pyyaml")."""
    return re.sub(r"[-_.]+", "-", re.split(r"[\s<>=!~;\[(]", requirement.strip(), maxsplit=1)[0]).lower()


def probe():
    """This Python's installed distributions and the modules of MODULES: what the GPU machine has."""
    distributions = {}
    for distribution in importlib.metadata.distributions():
        if distribution.metadata["Name"]:
            distributions.setdefault(name(distribution.metadata["Name"]), distribution.version)
    implementation = sys.implementation
    version = "{0.major}.{0.minor}.{0.micro}".format(implementation.version)
    return {
        "python": platform.python_version(),
        "machine": platform.machine(),
        "executable": sys.executable,
        "markers": {"implementation_name": implementation.name, "implementation_version": version,
                    "os_name": os.name, "platform_machine": platform.machine(),
                    "platform_release": platform.release(), "platform_system": platform.system(),
                    "platform_version": platform.version(), "python_full_version": platform.python_version(),
                    "platform_python_implementation": platform.python_implementation(),
                    "python_version": ".".join(platform.python_version_tuple()[:2]), "sys_platform": sys.platform},
        "distributions": distributions,
        "modules": {module: importlib.util.find_spec(module) is not None for module in sorted(set(MODULES.values()))},
    }


class Machine:
    """What the GPU machine has: a probe's output, a --have list, or nothing known."""

    def __init__(self, probed=None, have=""):
        probed = probed or {}
        self.known = bool(probed) or bool(have.strip())
        self.markers = probed.get("markers")
        self.versions = dict(probed.get("distributions", {}))  # name -> version, "" when unknown
        for module_requirement, module in MODULES.items():
            if probed.get("modules", {}).get(module) and not self.version_of(module_requirement):
                self.versions[module_requirement] = ""
        for item in have.replace(",", " ").split():
            self.versions[name(item)] = item.split("==", 1)[1].strip() if "==" in item else ""

    def version_of(self, distribution):
        """Its version on the machine ("" when present at an unknown version), or None when absent."""
        for candidate in (distribution, *ALTERNATIVES.get(distribution, ())):
            if candidate in self.versions:
                return self.versions[candidate]
        return None

    def satisfies(self, requirement):
        from packaging.requirements import Requirement

        version = self.version_of(name(requirement))
        if version is None:
            return False
        return version == "" or contains(Requirement(requirement).specifier, version)


def contains(specifier, version):
    """Whether `version` is in `specifier`; False for a version that is not PEP 440 (as pip would)."""
    try:
        return specifier.contains(version, prereleases=True)
    except ValueError:  # packaging's InvalidVersion
        return False


def load_packaging():
    try:
        import packaging.requirements  # noqa: F401
    except ModuleNotFoundError:  # a Python without packaging: pip's own copy
        from pip._vendor import packaging
        sys.modules["packaging"] = packaging
        import pip._vendor.packaging.requirements
        sys.modules["packaging.requirements"] = pip._vendor.packaging.requirements
        sys.modules["packaging.markers"] = pip._vendor.packaging.markers


def load_toml(path):
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10: pip's own copy of tomli
        from pip._vendor import tomli as tomllib
    with open(path, "rb") as handle:
        return tomllib.load(handle)


def needed(pyproject):
    """keras-cifar's dependencies that the GPU path imports (pyproject.toml's, less NOT_INSTALLED)."""
    return [r for r in load_toml(pyproject)["project"]["dependencies"] if name(r) not in NOT_INSTALLED]


def requirements(pyproject, machine):
    """The needed requirements that `machine` does not satisfy (all of them when nothing is known)."""
    return [r for r in needed(pyproject) if not machine.known or not machine.satisfies(r)]


def missing(report, machine, python=None, arch=None):
    """name==version of each distribution of a pip installation report (`pip install --dry-run
    --ignore-installed --report`) that the machine lacks, or has at a version that one of the
    resolved distributions' requirements rules out. Their markers are read for the machine (its
    probe's, else the report's with the target's `python` major.minor and `arch`): what none of
    them needs there is left out. The requested distributions are all listed: they were asked
    for because the machine lacks them."""
    from packaging.requirements import Requirement

    installs = report["install"]
    environment = dict(report.get("environment") or {})
    environment.update({"python_version": python, "python_full_version": f"{python}.0",
                        "implementation_version": f"{python}.0"} if python else {})
    environment.update({"platform_machine": arch} if arch else {})
    environment = dict(machine.markers or environment, extra="")
    wanted = {}  # name -> the specifiers that apply to it
    for item in installs:
        for text in item["metadata"].get("requires_dist") or []:
            requirement = Requirement(text)
            if requirement.marker is None or requirement.marker.evaluate(environment):
                wanted.setdefault(name(requirement.name), []).append(requirement.specifier)
    pins = []
    for item in installs:
        distribution, version = name(item["metadata"]["name"]), item["metadata"]["version"]
        if not item.get("requested") and distribution not in wanted:
            continue  # needed by no requirement whose markers hold on the machine
        have = machine.version_of(distribution) if machine.known and not item.get("requested") else None
        fits = have == "" or (have is not None and all(contains(s, have) for s in wanted[distribution]))
        if distribution not in NOT_INSTALLED and not fits:
            pins.append(f"{distribution}=={version}")
    return pins


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split("\n", 1)[1])
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("probe", help="what this Python has (run it on the GPU machine)")
    for command, source in (("requirements", "pyproject"), ("missing", "report"), ("has", "distribution")):
        sub = commands.add_parser(command)
        sub.add_argument(source)
        sub.add_argument("--machine", help="the JSON file that `probe` wrote on the GPU machine")
        sub.add_argument("--have", default="", help='what the GPU machine has: "torch numpy==2.1.0 ..."')
        if command == "missing":
            sub.add_argument("--python", help="the GPU machine's Python, major.minor (without --machine)")
            sub.add_argument("--arch", help="its CPU, x86_64 or aarch64 (without --machine)")
    commands.add_parser("target").add_argument("machine")
    args = parser.parse_args(argv)
    if args.command == "probe":
        print(json.dumps(probe(), indent=1, sort_keys=True))
        return
    if args.command == "target":
        probed = read_json(args.machine, "a probe's output")
        print(".".join(probed["python"].split(".")[:2]), probed["machine"])
        return
    load_packaging()
    machine = Machine(read_json(args.machine, "a probe's output") if args.machine else None, args.have)
    if args.command == "has":
        sys.exit(0 if machine.version_of(name(args.distribution)) is not None else 1)
    if args.command == "requirements":
        if not machine.known:
            print("Nothing is known of the GPU machine (no probe file, no HAVE list): listing every dependency "
                  "it may need, as for a machine with torch alone.", file=sys.stderr)
        elif machine.version_of("torchvision") is None:
            print("The GPU machine has no torchvision, which only the GPU check's plain-PyTorch resnet18 uses: "
                  f"to add it, set TARGET_TORCH={machine.version_of('torch') or 'its torch version'}.", file=sys.stderr)
        lines = requirements(args.pyproject, machine)
    else:
        lines = missing(read_json(args.report, "a pip installation report"), machine, args.python, args.arch)
    if lines:
        print("\n".join(lines))


def read_json(path, what):
    try:
        with open(path) as handle:
            return json.load(handle)
    except (OSError, ValueError) as error:
        raise SystemExit(f"Cannot read {path!r} as {what}: {error}") from None


if __name__ == "__main__":
    main()
