"""The docs are code users copy: run their examples, so that they cannot rot.

As `tests/test_readme.py` does for the README, every ```python block of every page of
`docs/` (and of DEVELOPERS.md) runs here, in-process under the Keras in use, the blocks of
one page in one namespace and in order (later blocks use the names of earlier ones, as a
reader would), in a temporary directory. A block opts out by its first lines:

- `# requires: tf_keras` or `# requires: keras3`: runs only under that Keras (QAT).
- `# docs: slow`: runs only with `-m slow` (the page's blocks then all run, in order).
- `# docs: fragment`: never runs; a piece that needs what a test cannot have (a cluster,
  a TPU, a file of yours). Keep these rare.

Besides, the generated API sections must be up to date (`python docs/_build_api.py`), every
public name of every subpackage's `__all__` must have its entry on its page, every page
must be reachable from `docs/index.md`, and every relative link must resolve.
"""

import importlib
import pathlib
import pkgutil
import re
import sys

import pytest

import keras_dnnopt
from keras_dnnopt.backend import USING_TF_KERAS

ROOT = pathlib.Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
sys.path.insert(0, str(DOCS))
import _build_api  # noqa: E402

sys.path.remove(str(DOCS))

PAGES = sorted(DOCS.glob("*.md")) + [ROOT / "DEVELOPERS.md"]
# Pages of other owners whose illustrative blocks are not marked `# docs: fragment` yet:
# (page, index of the ```python block). Remove an entry once its block is marked.
UNMARKED_FRAGMENTS = set()
# Link targets that exist only after a run (the lead's example report, `dnnopt` outputs).
IGNORED_LINK_PREFIXES = ("docs/example_report/", "runs/")

_BLOCK = re.compile(r"^```python\n(.*?)^```", flags=re.S | re.M)
_LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
_MARKER = re.compile(r"^#\s*(requires|docs):\s*(\S+)\s*$")


def _markers(block):
    found = {}
    for line in block.splitlines():
        match = _MARKER.match(line.strip())
        if not match:
            break
        found.setdefault(match.group(1), set()).add(match.group(2))
    return found


def _blocks(page):
    return _BLOCK.findall(page.read_text())


def _runnable(page, include_slow):
    """The blocks of `page` that run under the Keras in use, with the reason for each skip."""
    keras_name = "tf_keras" if USING_TF_KERAS else "keras3"
    run, skipped = [], []
    for index, block in enumerate(_blocks(page)):
        markers = _markers(block)
        requires = markers.get("requires", set())
        docs = markers.get("docs", set())
        unknown = (requires - {"tf_keras", "keras3"}) | (docs - {"slow", "fragment"})
        assert not unknown, f"{page.name}: unknown marker(s) {sorted(unknown)} in block {index}"
        if "fragment" in docs or (page.name, index) in UNMARKED_FRAGMENTS:
            skipped.append(f"block {index}: fragment")
        elif requires and keras_name not in requires:
            skipped.append(f"block {index}: requires {sorted(requires)}")
        elif "slow" in docs and not include_slow:
            skipped.append(f"block {index}: slow")
        else:
            run.append((index, block))
    return run, skipped


def _run_page(page, include_slow, tmp_path, monkeypatch):
    run, _ = _runnable(page, include_slow)
    if not run:
        pytest.skip(f"{page.name}: no block runs here")
    monkeypatch.chdir(tmp_path)  # examples write files (.tflite, .png, .keras) where they run
    namespace = {"__name__": f"docs_{page.stem}"}
    for index, block in run:
        try:
            exec(compile(block, f"{page.name} (python block {index})", "exec"), namespace)
        except Exception as error:
            raise AssertionError(f"{page.name}: python block {index} failed: {error!r}") from error


def _page_id(page):
    return page.relative_to(ROOT).as_posix()


_HAS_SLOW = [p for p in PAGES if any("slow" in _markers(b).get("docs", ()) for b in _blocks(p))]


@pytest.mark.parametrize("page", PAGES, ids=_page_id)
def test_page_python_blocks_run(page, tmp_path, monkeypatch):
    _run_page(page, include_slow=False, tmp_path=tmp_path, monkeypatch=monkeypatch)


@pytest.mark.slow
@pytest.mark.parametrize("page", _HAS_SLOW or [None], ids=lambda p: _page_id(p) if p else "none")
def test_page_slow_blocks_run(page, tmp_path, monkeypatch):
    if page is None:
        pytest.skip("no page has a slow block")
    _run_page(page, include_slow=True, tmp_path=tmp_path, monkeypatch=monkeypatch)


def test_markers_select_blocks(tmp_path):
    page = tmp_path / "page.md"
    page.write_text(
        "```python\nx = 1\n```\n"
        "```python\n# requires: tf_keras\nx = 2\n```\n"
        "```python\n# requires: keras3\nx = 3\n```\n"
        "```python\n# docs: slow\nx = 4\n```\n"
        "```python\n# docs: fragment\nundefined_name\n```\n"
        "```bash\nexit 1\n```\n"
    )
    fast, skipped = _runnable(page, include_slow=False)
    expected = [0, 1] if USING_TF_KERAS else [0, 2]
    assert [index for index, _ in fast] == expected
    assert len(skipped) == 3
    everything, _ = _runnable(page, include_slow=True)
    assert [index for index, _ in everything] == expected + [3]


def test_every_module_page_has_python_example():
    for page in [*_build_api.PAGES.values(), "getting-started.md"]:
        assert _blocks(DOCS / page), f"docs/{page} has no ```python example"


def test_api_sections_are_up_to_date():
    stale = [page for page, text in _build_api.expected_pages().items()
             if (DOCS / page).read_text() != text]
    assert not stale, f"stale API sections in {stale}: run `python docs/_build_api.py`"


def _public_subpackages():
    for info in pkgutil.iter_modules(keras_dnnopt.__path__):
        if info.ispkg:
            module = importlib.import_module(f"keras_dnnopt.{info.name}")
            yield info.name, getattr(module, "__all__", None)


def test_every_subpackage_has_a_page():
    missing = [name for name, names in _public_subpackages()
               if names and name not in _build_api.PAGES and name not in _build_api.UNDOCUMENTED]
    assert not missing, (
        f"subpackages without a docs page: {missing}. Add docs/<name>.md (prose, a ```python "
        f"example, the API markers), list it in PAGES of docs/_build_api.py and docs/index.md, "
        f"and run `python docs/_build_api.py`."
    )


@pytest.mark.parametrize("subpackage", sorted(_build_api.PAGES))
def test_every_public_name_is_on_its_page(subpackage):
    module = importlib.import_module(f"keras_dnnopt.{subpackage}")
    text = (DOCS / _build_api.PAGES[subpackage]).read_text()
    missing = [name for name in module.__all__ if f"### `{name}`" not in text]
    assert not missing, f"docs/{_build_api.PAGES[subpackage]} lacks {missing}"


def test_every_cli_subcommand_is_on_the_cli_page():
    text = (DOCS / _build_api.CLI_PAGE).read_text()
    missing = [name for name in _build_api.cli_subcommands() if f"dnnopt {name}" not in text]
    assert not missing, f"docs/cli.md lacks the subcommands {missing}"


def test_index_links_every_page():
    index = (DOCS / "index.md").read_text()
    linked = {target.split("#")[0] for target in _LINK.findall(index)}
    missing = [p.name for p in DOCS.glob("*.md") if p.name != "index.md" and p.name not in linked]
    assert not missing, f"docs/index.md does not link {missing}"


def _relative_links(page):
    for target in _LINK.findall(page.read_text()):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target) or target.startswith("#"):
            continue  # http(s), mailto: not checked offline; anchors within the page
        yield target


@pytest.mark.parametrize("page", PAGES, ids=_page_id)
def test_relative_links_resolve(page):
    broken = []
    for target in _relative_links(page):
        path = (page.parent / target.split("#")[0]).resolve()
        relative = path.relative_to(ROOT).as_posix() if path.is_relative_to(ROOT) else str(path)
        if relative.startswith(IGNORED_LINK_PREFIXES):
            continue
        if not path.exists():
            broken.append(target)
    assert not broken, f"{_page_id(page)}: broken relative links {broken}"


def test_link_check_sees_broken_links(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("[a](missing.md) [b](https://example.com) [c](#anchor) [d](page.md#x)")
    assert list(_relative_links(page)) == ["missing.md", "page.md#x"]
