"""The package's import graph: no cycles, no arrows pointing up, nothing from the root.

Every module of `keras_dnnopt` is parsed with `ast` (no import runs), and every import it
holds, at module level *and* inside functions, is an edge of the graph: a cycle through a
function-level import is still a cycle. Rules:

(a) no cycle between modules;
(b) a module imports only from its own layer or the layers below it. The layers, bottom to
    top: [backend, _version, utils] -> [layers, schedules, callbacks] -> [models, profiling]
    -> [distillation, compression, data] -> [export, evaluation, visualization, tuning,
    distribute] -> [pipeline] -> [cli]. Imports between sibling subpackages of one layer are
    allowed (rule (a) keeps them acyclic);
(c) no module imports the package root: `import keras_dnnopt` or `from keras_dnnopt import X`
    where X is not a submodule (`__version__`, `profile`, ...). `from keras_dnnopt import
    layers` imports the subpackage `keras_dnnopt.layers` and is judged by (b). The root
    `keras_dnnopt/__init__.py` itself may import everything.

A self-test runs the checker on small synthetic graphs with a planted cycle, upward import
and root import, so that the check cannot pass vacuously.
"""

import ast
import pathlib

import keras_dnnopt

PACKAGE = "keras_dnnopt"
LAYERS = [
    ["backend", "_version", "utils"],
    ["layers", "schedules", "callbacks"],
    ["models", "profiling"],
    ["distillation", "compression", "data"],
    ["export", "evaluation", "visualization", "tuning", "distribute"],
    ["pipeline"],
    ["cli"],
]
LAYER_OF = {name: level for level, names in enumerate(LAYERS) for name in names}


def package_sources():
    """`{module name: source}` for every module of the installed package."""
    root = pathlib.Path(keras_dnnopt.__file__).parent
    sources = {}
    for path in sorted(root.rglob("*.py")):
        parts = list(path.relative_to(root.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        sources[".".join(parts)] = path.read_text(encoding="utf-8")
    return sources


def _resolve(module, is_package, level, name):
    if not level:
        return name
    base = module.split(".")
    base = base[: len(base) - level + (1 if is_package else 0)]
    return ".".join(base + ([name] if name else []))


def import_edges(sources, packages=None):
    """`[(importer, imported, line)]`: every import of a package module (all levels)."""
    names = set(sources)
    packages = packages if packages is not None else {
        m for m in names if any(other.startswith(m + ".") for other in names) or m == PACKAGE}
    edges = []
    for module, source in sources.items():
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name == PACKAGE or alias.name.startswith(PACKAGE + "."):
                        edges.append((module, alias.name, node.lineno))
            elif isinstance(node, ast.ImportFrom):
                target = _resolve(module, module in packages, node.level, node.module)
                if not (target == PACKAGE or target.startswith(PACKAGE + ".")):
                    continue
                for alias in node.names:
                    sub = f"{target}.{alias.name}"
                    # `from pkg import submodule` imports the submodule itself.
                    edges.append((module, sub if sub in names else target, node.lineno))
    return edges


def _layer(module):
    parts = module.split(".")
    return LAYER_OF.get(parts[1]) if len(parts) > 1 else None


def find_cycles(edges):
    """The strongly connected components (of more than one module, or a self-loop)."""
    graph = {}
    for a, b, _ in edges:
        graph.setdefault(a, set()).add(b)
    index, low, stack, on_stack, result, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1 or v in graph.get(v, ()):
                result.append(sorted(component))

    for v in list(graph):
        if v not in index:
            visit(v)
    return result


def violations(sources, packages=None):
    """Human-readable violations of rules (a), (b) and (c)."""
    edges = [e for e in import_edges(sources, packages) if e[0] != e[1]]
    problems = []
    for importer, imported, line in edges:
        if importer == PACKAGE:
            continue
        where = f"{importer} (line {line}) imports {imported}"
        if imported == PACKAGE:
            problems.append(f"{where}: the package root")
            continue
        low, high = _layer(importer), _layer(imported)
        if low is None or high is None:
            problems.append(f"{where}: a module of no known layer; add it to LAYERS")
        elif high > low:
            problems.append(f"{where}: layer {high} is above layer {low}")
    # The root imports everything by design; leave it out of the cycle search.
    for component in find_cycles([e for e in edges if PACKAGE not in (e[0], e[1])]):
        problems.append("import cycle: " + " <-> ".join(component))
    return problems


def test_package_has_no_cycles_no_upward_and_no_root_imports():
    sources = package_sources()
    assert len(sources) > 50  # the whole package was found
    problems = violations(sources)
    assert not problems, "\n".join(problems)


def test_checker_catches_planted_violations():
    base = {
        "keras_dnnopt": "from keras_dnnopt import cli\n",
        "keras_dnnopt.backend": "",
        "keras_dnnopt.layers": "from keras_dnnopt.layers import block\n",
        "keras_dnnopt.layers.block": "from keras_dnnopt.backend import keras\n",
        "keras_dnnopt.cli": "from keras_dnnopt import layers\n",
    }
    packages = {"keras_dnnopt", "keras_dnnopt.layers", "keras_dnnopt.cli"}
    assert violations(base, packages) == []

    upward = dict(base)
    upward["keras_dnnopt.layers.block"] = "def f():\n    from keras_dnnopt.cli import main\n"
    assert any("layer 6 is above layer 1" in p for p in violations(upward, packages))

    cycle = dict(base)
    cycle["keras_dnnopt.backend"] = "def f():\n    from .layers import block\n"
    cycle["keras_dnnopt.layers.block"] = "from keras_dnnopt import backend\n"
    found = violations(cycle, packages)
    assert any(p.startswith("import cycle:") and "keras_dnnopt.backend" in p for p in found)

    root = dict(base)
    root["keras_dnnopt.cli"] = "from keras_dnnopt import __version__\nimport keras_dnnopt\n"
    assert sum("the package root" in p for p in violations(root, packages)) == 2
