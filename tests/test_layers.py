"""The package's import graph: data flows one way, no cycles, no private names across modules,
nothing jitted or cached at import."""

import ast
import pathlib
import subprocess
import sys

PACKAGE = pathlib.Path(__file__).resolve().parents[1] / "selfconsume"

# Lower layers never import higher ones (same layer: allowed when acyclic).
LAYERS = [
    {"types", "_checks", "files", "_options", "_processes"},
    {"stats", "results"},
    {"_choice", "_quadrature", "_solvers"},
    {"curators"},
    {"curation", "metrics", "models", "rewards", "data", "theory", "classifier",
     "reward_models", "preferences"},
    {"_loop"},
    {"retrain", "ecosystem"},
    {"execution"},
    {"plotting"},
    {"study"},
    {"cli"},
]


def _module_name(path: pathlib.Path) -> str:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _imports(path: pathlib.Path):
    """(imported module, imported name or None) pairs of the package's own modules."""
    tree = ast.parse(path.read_text())
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith(
                "selfconsume"):
            for alias in node.names:
                full = f"{node.module}.{alias.name}"
                if (PACKAGE.parent / (full.replace(".", "/") + ".py")).exists() or (
                        PACKAGE.parent / full.replace(".", "/")).is_dir():
                    out.append((full, None))
                else:
                    out.append((node.module, alias.name))
        elif isinstance(node, ast.Import):
            out += [(a.name, None) for a in node.names if a.name.startswith("selfconsume")]
    return out


def _layer(module: str) -> int:
    top = module.split(".")[1] if module.count(".") >= 1 else "__init__"
    for i, layer in enumerate(LAYERS):
        if top in layer:
            return i
    raise AssertionError(f"{module} is in no layer; add it to LAYERS")


def _graph():
    graph = {}
    for path in PACKAGE.rglob("*.py"):
        name = _module_name(path)
        if name == "selfconsume":
            continue
        graph[name] = _imports(path)
    return graph


def test_no_upward_imports():
    bad = []
    for module, imports in _graph().items():
        for target, _ in imports:
            if target == "selfconsume":
                if module != "selfconsume.cli":  # the top layer may use the package root
                    bad.append(f"{module} imports the package root")
            elif _layer(target) > _layer(module):
                bad.append(f"{module} (layer {_layer(module)}) imports {target} "
                           f"(layer {_layer(target)})")
    assert not bad, bad


def test_no_import_cycles():
    graph = {m: {t for t, _ in imps if t != m and not m.startswith(t + ".")}
             for m, imps in _graph().items()}

    def visit(node, stack, done):
        if node in stack:
            raise AssertionError(f"import cycle: {' -> '.join(stack[stack.index(node):] + [node])}")
        if node in done:
            return
        stack.append(node)
        for nxt in graph.get(node, ()):
            if nxt in graph:
                visit(nxt, stack, done)
        stack.pop()
        done.add(node)

    done: set = set()
    for node in graph:
        visit(node, [], done)


def test_no_private_name_imported_from_a_public_module():
    bad = []
    for module, imports in _graph().items():
        for target, name in imports:
            last = target.split(".")[-1]
            if (name is not None and name.startswith("_") and not name.startswith("__")
                    and not last.startswith("_")):
                bad.append(f"{module} imports {name} from {target}")
    assert not bad, bad


def test_import_jits_nothing_and_starts_no_backend():
    code = ("import jax\n"
            "calls = []\n"
            "real_jit = jax.jit\n"
            "def jit(f, *a, **k):\n"
            "    if getattr(f, '__module__', '').startswith('selfconsume'):\n"
            "        calls.append(f)\n"
            "    return real_jit(f, *a, **k)\n"
            "jax.jit = jit\n"
            "import selfconsume, selfconsume.study, selfconsume.cli, selfconsume.plotting\n"
            "from jax._src import xla_bridge\n"
            "assert not calls, calls\n"
            "assert not xla_bridge.backends_are_initialized()\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
