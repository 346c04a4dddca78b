"""Writing into the log folder: a full disk, a file-size or quota limit, or a read-only folder
end the run with one message that names the folder, the cause and the space a checkpoint needs."""

import contextlib
import errno
import os
import re

from keras_cifar.errors import StorageError

FULL = (errno.ENOSPC, errno.EDQUOT)
STORAGE_ERRNOS = (*FULL, errno.EFBIG, errno.EROFS, errno.EACCES, errno.EPERM)


class WriteFailed(StorageError):
    """A write into the run folder that the file system refused; `explain` words it for the user."""

    def __init__(self, what, folder, code):
        self.what, self.folder, self.code = what, folder, code
        super().__init__(f"Cannot write {what} in {folder!r}: {os.strerror(code)}.")


def storage_errno(error):
    """The errno of a write refused for space, size or permission; None for any other error.
    TensorFlow's summary writers raise their own errors, which carry only the system's message."""
    if isinstance(error, OSError):
        return error.errno if error.errno in STORAGE_ERRNOS else None
    if type(error).__module__.startswith("tensorflow"):
        text = str(error)
        return next((code for code in STORAGE_ERRNOS if os.strerror(code) in text), None)
    return None


def refused(error, what, folder):
    """WriteFailed for `error` if the file system refused the write; None for any other error."""
    code = storage_errno(error)
    return WriteFailed(what, folder, code) if code is not None else None


@contextlib.contextmanager
def writing(what, folder, cleanup=()):
    """Turns a refused write inside the block into WriteFailed, after removing the `cleanup` paths
    (partial or uncommitted files) so that they give their space back."""
    try:
        yield
    except Exception as error:
        failed = refused(error, what, folder)
        if failed is None:
            raise
        for path in cleanup:
            with contextlib.suppress(OSError):
                os.remove(path)
        raise failed from None


def variables_bytes(model):
    """The bytes of the model's and its optimizer's variables: about what a checkpoint holds."""
    variables = list(model.variables)
    optimizer = getattr(model, "optimizer", None)
    if optimizer is not None:
        variables += list(optimizer.variables)
    total = 0
    for variable in variables:
        bits = re.search(r"(\d+)$", str(variable.dtype))
        count = 1
        for dimension in variable.shape:
            count *= int(dimension)
        total += count * (int(bits.group(1)) // 8 if bits else 1)
    return total


def checkpoint_bytes(model, run_path, state):
    """What the next checkpoint takes: the size of the last one written, else the variables' bytes."""
    if state.get("checkpoint"):
        with contextlib.suppress(OSError):
            return os.path.getsize(os.path.join(run_path, state["checkpoint"]))
    return variables_bytes(model)


def free_bytes(folder):
    """The space left to this user on the disk holding `folder`; None where the file system does not say."""
    try:
        stats = os.statvfs(folder)
    except OSError:
        return None
    return stats.f_bavail * stats.f_frsize if stats.f_blocks else None


def size_text(count):
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("KB", 1e3)):
        if count >= scale:
            return f"{count / scale:.1f} {unit}" if count < 10 * scale else f"{count / scale:.0f} {unit}"
    return f"{count} bytes"


def check_free_space(what, folder, needed):
    """Raises WriteFailed (no space) when the disk holding `folder` has less than `needed` bytes free."""
    free = free_bytes(folder)
    if free is not None and free < needed:
        raise WriteFailed(what, folder, errno.ENOSPC)


def explain(failed, needed, outcome, then, at_least=False):
    """The user's message for `failed`: the cause, `outcome` (what is kept), and what to do before `then`
    (what to run once the folder takes the writes again). `needed` is a checkpoint's size (None: not
    known yet), with `at_least` a lower bound of it (before the optimizer has its state)."""
    size = size_text(needed) if needed is not None else None
    notes = []
    free = free_bytes(failed.folder) if failed.code == errno.ENOSPC else None
    if free is not None:
        notes.append(f"{size_text(free)} free on that disk")
    if failed.code == errno.EFBIG:
        notes.append("a limit on the size of a file, ulimit -f")
    if size and failed.code in (*FULL, errno.EFBIG):
        notes.append(f"a checkpoint of this run takes {'at least' if at_least else 'about'} {size}")
    cause = os.strerror(failed.code) + (f" ({'; '.join(notes)})" if notes else "")
    remedy = {errno.ENOSPC: f"Make at least {size} free there" if size else "Free some space there",
              errno.EDQUOT: f"Make at least {size} of your quota free" if size else "Free some of your quota",
              errno.EFBIG: f"Raise that limit above {size}" if size else "Raise that limit"}
    return (f"Cannot write {failed.what} in {failed.folder!r}: {cause}. {outcome} "
            f"{remedy.get(failed.code, 'Make the folder writable')}, then {then}")
