"""The output folder of `dnnopt optimize`: one folder per finished stage, written atomically.

A stage works in its folder in progress, `OUT/.partial/<n>_<stage>/`, and that folder is
renamed into place (`OUT/stages/<n>_<stage>/`, `os.replace`, atomic on one file system) only
once everything in it, its `stage.json` last, is written. So a stage folder that exists is
complete. An interrupted or killed stage leaves its folder in progress behind, with what
it needs to resume (the `BackupAndRestore` state of its training, see
`stages.BACKUP_DIR`); the next run with the same configuration resumes from it, any other
run starts the stage afresh. Every file is itself written to a temporary name and renamed
(`write_json`, `atomic_path`).
"""

import contextlib
import json
import os
import shutil
import tempfile

STAGE_FILE = "stage.json"
PARTIAL_DIR = ".partial"
RESUME_FILE = "resume.json"  # what a folder in progress was made for


@contextlib.contextmanager
def atomic_path(path):
    """A temporary path next to `path` (same suffix) to write to; moved over `path` with
    `os.replace` when the block ends without an error, removed otherwise.

    Example:

    >>> import tempfile, os
    >>> folder = tempfile.mkdtemp()
    >>> with atomic_path(os.path.join(folder, "a.txt")) as temp:
    ...     _ = open(temp, "w").write("whole")
    >>> open(os.path.join(folder, "a.txt")).read()
    'whole'
    """
    folder, name = os.path.split(os.path.abspath(path))
    suffix = ".weights.h5" if name.endswith(".weights.h5") else os.path.splitext(name)[1]
    handle, temp = tempfile.mkstemp(prefix=".tmp-", suffix=suffix, dir=folder)
    os.close(handle)
    os.remove(temp)  # writers such as `model.save` want to create the file themselves
    try:
        yield temp
        if os.path.isdir(temp):
            raise IsADirectoryError(temp)
        publish_mode(temp)
        os.replace(temp, path)
    finally:
        if os.path.isfile(temp):
            os.remove(temp)


def write_json(path, data):
    """Writes `data` as JSON to `path` atomically (temporary file, then `os.replace`)."""
    text = json.dumps(data, indent=2, sort_keys=False, default=_jsonable)
    folder = os.path.dirname(os.path.abspath(path))
    handle, temp = tempfile.mkstemp(prefix=".tmp-", suffix=".json", dir=folder)
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as out:
            out.write(text + "\n")
        publish_mode(temp)
        os.replace(temp, path)
    except BaseException:
        if os.path.exists(temp):
            os.remove(temp)
        raise


def read_json(path):
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)


def _jsonable(value):
    """NumPy scalars and arrays, tuples and the like, as JSON values."""
    if hasattr(value, "tolist"):
        return value.tolist()
    if hasattr(value, "item"):
        return value.item()
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


def publish_mode(path, directory=False):
    """Gives a file made by `tempfile` (owner-only) the usual permissions under the umask."""
    os.chmod(path, (0o777 if directory else 0o666) & ~_umask())


def _publish_modes(folder):
    publish_mode(folder, directory=True)
    for root, dirs, files in os.walk(folder):
        for name in dirs:
            publish_mode(os.path.join(root, name), directory=True)
        for name in files:
            publish_mode(os.path.join(root, name))


class StageStore:
    """Where each stage's folder lives, which stages are finished, and atomic commits."""

    def __init__(self, out_dir, stages):
        self.out_dir = os.path.abspath(out_dir)
        self.stages_dir = os.path.join(self.out_dir, "stages")
        self.stages = tuple(stages)

    def folder(self, stage):
        index = self.stages.index(stage) + 1
        return os.path.join(self.stages_dir, f"{index}_{stage}")

    def record(self, stage):
        """The finished stage's record (its `stage.json`), or None when it has not run."""
        path = os.path.join(self.folder(stage), STAGE_FILE)
        return read_json(path) if os.path.isfile(path) else None

    def clean_temporaries(self):
        """Removes the temporary folders and files an interrupted run left behind (the
        folders in progress stay, to resume from)."""
        for folder in (self.stages_dir, self.out_dir):
            if not os.path.isdir(folder):
                continue
            for name in os.listdir(folder):
                path = os.path.join(folder, name)
                if not name.startswith(".tmp-"):
                    continue
                if os.path.isdir(path):
                    shutil.rmtree(path, ignore_errors=True)
                else:
                    os.remove(path)

    def partial(self, stage):
        """The stage's folder in progress (where it writes before its commit)."""
        return os.path.join(self.out_dir, PARTIAL_DIR, os.path.basename(self.folder(stage)))

    def begin(self, stage, key=None):
        """The folder for `stage` to write into, and whether it resumes an earlier try.

        The folder in progress an interrupted try left is kept when it was made for the same
        `key` (a JSON-able description of the stage's configuration and inputs); otherwise
        it is emptied.

        Returns:
            `(folder, resumed)`.
        """
        folder = self.partial(stage)
        marker = os.path.join(folder, RESUME_FILE)
        if os.path.isfile(marker):
            try:
                if read_json(marker) == key:
                    return folder, True
            except ValueError:  # unreadable: start afresh
                pass
        shutil.rmtree(folder, ignore_errors=True)
        os.makedirs(folder)
        write_json(marker, key)
        return folder, False

    def commit(self, stage, workdir, record):
        """Writes `record` as the stage's `stage.json` and moves the folder into place,
        replacing an older result of the stage."""
        marker = os.path.join(workdir, RESUME_FILE)
        if os.path.isfile(marker):
            os.remove(marker)
        write_json(os.path.join(workdir, STAGE_FILE), record)
        _publish_modes(workdir)
        os.makedirs(self.stages_dir, exist_ok=True)
        final = self.folder(stage)
        if os.path.isdir(final):
            # Move the old result aside first, so the new one lands atomically and the old
            # one is only deleted once it has been replaced.
            old = tempfile.mkdtemp(prefix=f".tmp-old-{stage}-", dir=self.stages_dir)
            os.replace(final, os.path.join(old, "stage"))
            os.replace(workdir, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(workdir, final)
        return final

    def abandon(self, workdir):
        shutil.rmtree(workdir, ignore_errors=True)

    def invalidate(self, stage):
        """Removes a finished stage's folder (it is to be redone)."""
        final = self.folder(stage)
        if os.path.isdir(final):
            old = tempfile.mkdtemp(prefix=f".tmp-old-{stage}-", dir=self.stages_dir)
            os.replace(final, os.path.join(old, "stage"))
            shutil.rmtree(old, ignore_errors=True)
