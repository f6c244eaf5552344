"""The README's API tour is code users copy: run it, so that it cannot drift from the API."""

import pathlib
import re

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"


def _python_blocks():
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def test_readme_has_a_python_tour():
    assert _python_blocks(), "README.md lost its ```python tour"


def test_readme_python_blocks_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the tour writes files (a .tflite) where it runs
    namespace = {"__name__": "readme_tour"}
    for block in _python_blocks():  # later blocks use names of earlier ones, as a reader would
        exec(compile(block, str(README), "exec"), namespace)
