"""The output folder of `dnnopt optimize`: one folder per finished stage, written atomically.

A stage works in a hidden temporary folder next to its final place and is renamed into
place (`os.replace`, atomic on one file system) only once everything in it, its
`stage.json` last, is written. So a stage folder that exists is complete; an interrupted
stage leaves only a temporary folder, removed at the next start.
"""

import json
import os
import shutil
import tempfile

STAGE_FILE = "stage.json"


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
        """Removes the temporary folders an interrupted run left behind."""
        if not os.path.isdir(self.stages_dir):
            return
        for name in os.listdir(self.stages_dir):
            if name.startswith(".tmp-"):
                shutil.rmtree(os.path.join(self.stages_dir, name), ignore_errors=True)

    def begin(self, stage):
        """A fresh temporary folder for `stage` to write into."""
        os.makedirs(self.stages_dir, exist_ok=True)
        return tempfile.mkdtemp(prefix=f".tmp-{stage}-", dir=self.stages_dir)

    def commit(self, stage, workdir, record):
        """Writes `record` as the stage's `stage.json` and moves the folder into place,
        replacing an older result of the stage."""
        write_json(os.path.join(workdir, STAGE_FILE), record)
        _publish_modes(workdir)
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
