"""The README's API tour is code users copy: run it, so that it cannot drift from the API."""

import pathlib
import re

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"


def _python_blocks():
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def test_readme_has_a_python_tour():
    assert _python_blocks(), "README.md lost its ```python tour"


def test_readme_python_blocks_run():
    for block in _python_blocks():
        exec(compile(block, str(README), "exec"), {"__name__": "readme_tour"})
