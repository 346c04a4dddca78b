"""Runs a command as a child subreaper (Linux): a process of the command whose parent exits is
handed to this one rather than to init, so the exit code of every rank is known, also of a rank
whose torchrun agent was killed, and no process of the command can escape `kill_all`.

As a script it writes one line "PID EXIT_CODE" per process it reaps (a signal as its negative
number) and exits with the command's own exit code once every process handed to it has ended:

    python tests/reaper.py STATUS_FILE COMMAND [ARGS...]

The functions below start it and read what it wrote.
"""

import contextlib
import ctypes
import os
import signal
import subprocess
import sys

PR_SET_CHILD_SUBREAPER = 36


def start(status_path, command, **popen):
    return subprocess.Popen([sys.executable, os.path.abspath(__file__), str(status_path), *map(str, command)],
                            **popen)


def exit_codes(status_path):
    """{pid: exit code} of the processes the reaper has reaped so far."""
    with open(status_path) as handle:
        return {int(pid): int(code) for pid, code in (line.split() for line in handle if line.strip())}


def parent(pid):
    with open(f"/proc/{pid}/stat") as handle:
        return int(handle.read().rsplit(")", 1)[1].split()[1])


def environment(pid):
    with open(f"/proc/{pid}/environ", "rb") as handle:
        return dict(item.decode().split("=", 1) for item in handle.read().split(b"\0") if b"=" in item)


def alive(pid):
    """Running, not a zombie waiting to be reaped."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def _children_of_every_process():
    children = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            with contextlib.suppress(OSError, ValueError, IndexError):
                children.setdefault(parent(int(name)), []).append(int(name))
    return children


def children(pid):
    return _children_of_every_process().get(pid, [])


def descendants(root):
    """Every process below `root`, as pids."""
    children = _children_of_every_process()
    found, stack = [], list(children.get(root, []))
    while stack:
        pid = stack.pop()
        found.append(pid)
        stack += children.get(pid, [])
    return found


def kill_all(process):
    """SIGKILL to every process below the reaper, then to the reaper."""
    for _ in range(10):  # a process may fork while we look
        pids = descendants(process.pid)
        if not pids:
            break
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    process.kill()
    process.wait()


def main(status_path, command):
    if ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_CHILD_SUBREAPER) failed")
    code = 1
    with open(status_path, "w", buffering=1) as statuses:
        child = os.spawnvp(os.P_NOWAIT, command[0], command)
        while True:
            try:
                pid, status = os.wait()
            except ChildProcessError:
                break
            exit_code = os.waitstatus_to_exitcode(status)
            statuses.write(f"{pid} {exit_code}\n")
            if pid == child:
                code = 128 - exit_code if exit_code < 0 else exit_code
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2:]))
