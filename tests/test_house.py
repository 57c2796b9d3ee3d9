"""The house's shape: no import circle among the project's modules, no model named in the generic code
(a model is its record, models.Spec), and every script answers --help without importing torch, scipy
or litdata (seconds each on a small machine; pandas, half a second, may come with results.py)."""
import ast
import subprocess
import sys

import pytest

import catalog as C
from runs import REPO

MODULES = {p.stem: p for p in REPO.glob("*.py")}
# the code every task and model goes through: it asks the records, never a name
GENERIC = ("dpt", "train", "tasks", "imagetask", "texttask", "rectask", "preflight", "checkpoint", "schedule",
           "flags", "results", "runlog", "topology", "importance", "heuristics", "samplers", "console")
SCRIPTS = ("dpt.py", "bench.py", "report.py", "iosim.py", "streaming.py", "sweep.py", "gpucheck.py")


def imports(path) -> set[str]:
    """The project modules `path` imports, at its top or inside a function."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module.split(".")[0])
    return (found & MODULES.keys()) - {path.stem}


def test_no_import_circle():
    graph = {name: imports(path) for name, path in MODULES.items()}
    done, path = set(), []

    def visit(name):
        if name in path:
            raise AssertionError(f"import circle: {' -> '.join(path[path.index(name):] + [name])}")
        if name in done:
            return
        path.append(name)
        for other in sorted(graph[name]):
            visit(other)
        path.pop()
        done.add(name)
    for name in sorted(graph):
        visit(name)
    assert graph["gendocs"] >= {"catalog", "flags", "sweep"} and not any("gendocs" in g for g in graph.values())


def strings(tree: ast.AST) -> list[tuple[int, str]]:
    """Every string constant of the code but docstrings (whose examples may name a model)."""
    docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                  if isinstance(node, (ast.Module, ast.FunctionDef, ast.ClassDef)) and node.body
                  and isinstance(node.body[0], ast.Expr) and isinstance(node.body[0].value, ast.Constant)}
    return [(n.lineno, n.value) for n in ast.walk(tree)
            if isinstance(n, ast.Constant) and isinstance(n.value, str) and id(n) not in docstrings]


@pytest.mark.parametrize("module", GENERIC)
def test_the_generic_code_names_no_model(module):
    named = [(line, text) for line, text in strings(ast.parse(MODULES[module].read_text()))
             if any(m in text.replace("-", " ").split() or m == text for m in C.MODELS)]
    assert named == [], f"{module}.py names a model: ask its record (models.MODELS[name]) instead"


@pytest.mark.slow
@pytest.mark.parametrize("script", SCRIPTS)
def test_every_scripts_help_answers_before_importing_torch(script):
    code = ("import runpy, sys\n"
            f"sys.argv = [{script!r}, '--help']\n"
            "try:\n"
            f"    runpy.run_path({script!r}, run_name='__main__')\n"
            "except SystemExit as stop:\n"
            "    assert stop.code in (0, None), stop.code\n"
            "print('IMPORTED', sorted(m for m in ('torch', 'scipy', 'litdata') if m in sys.modules))\n")
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.startswith("usage: ") and proc.stdout.strip().endswith("IMPORTED []"), proc.stdout[-500:]


def test_dpt_reads_as_the_papers_algorithm_in_at_most_300_lines():
    """The run's phases stay in view: what grows goes to the modules dpt.py names."""
    assert len(MODULES["dpt"].read_text().splitlines()) <= 300
