"""The package's layers point one way: no import cycle (function-local imports included), no
private name imported from another module, and the math that reads tables never reaches code
that loads models."""

import ast

from conftest import ROOT

PKG = ROOT / "workflow" / "overopt"
TABLE_MATH = ("estimator", "bootstrap", "fit", "findings", "protocol", "keys", "scaling", "summary", "jobtimes", "report")
LOADS_MODELS = ("models", "hf", "gold", "rm", "loglik", "pool", "ppo", "comparisons")


def _imports():
    """{module: {(imported module, name), ...}} over every import statement in the package."""
    graph = {}
    for f in sorted(PKG.glob("*.py")):
        mod = f.stem
        graph[mod] = set()
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, ast.ImportFrom):
                if node.level == 1 and node.module:
                    target = node.module.split(".")[0]
                elif node.module and node.module.startswith("overopt."):
                    target = node.module.split(".")[1]
                elif (node.level == 1 and not node.module) or node.module == "overopt":  # from . import x
                    graph[mod] |= {(a.name, a.name) for a in node.names}
                    continue
                else:
                    continue
                graph[mod] |= {(target, a.name) for a in node.names}
            elif isinstance(node, ast.Import):  # import overopt.x
                graph[mod] |= {(a.name.split(".")[1],) * 2 for a in node.names if a.name.startswith("overopt.")}
    return graph


def test_every_form_of_import_is_an_edge():
    graph = _imports()
    assert ("plain", "plain") in graph["models"]  # from . import plain
    assert ("models", "load_causal") in graph["pool"]  # from .models import load_causal


def test_no_import_cycle_and_no_private_names_across_modules():
    graph = _imports()
    private = sorted(f"{m} imports {t}.{n}" for m, edges in graph.items() for t, n in edges if n.startswith("_"))
    assert not private, private
    deps = {m: {t for t, _ in edges if t != m} for m, edges in graph.items()}
    state, stack = {}, []

    def visit(m):
        state[m] = "open"
        stack.append(m)
        for t in sorted(deps.get(m, ())):
            assert state.get(t) != "open", "import cycle: " + " -> ".join(stack[stack.index(t):] + [t])
            if t not in state:
                visit(t)
        stack.pop()
        state[m] = "done"

    for m in sorted(deps):
        if m not in state:
            visit(m)


def test_table_math_never_reaches_code_that_loads_models():
    graph = _imports()
    deps = {m: {t for t, _ in edges if t != m} for m, edges in graph.items()}
    for m in TABLE_MATH:
        seen, todo = set(), [m]
        while todo:
            for t in deps.get(todo.pop(), ()):
                if t not in seen:
                    seen.add(t)
                    todo.append(t)
        assert not seen & set(LOADS_MODELS), f"{m} reaches {sorted(seen & set(LOADS_MODELS))}"
