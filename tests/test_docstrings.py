"""The command that opens each module's docstring runs as written from the repository root (a copy of
it whose results/ is empty: symlinks to everything else). They run in one subprocess (each
`python -c` snippet exec'd in a fresh namespace, each script through runpy with its argv), so the
suite pays for one torch import, not thirty. Commands that train for minutes (every `python dpt.py`)
run with --preflight 1 appended (every check, no training); bench.py's is run by gpu-check.sh --smoke
(tests/test_gpucheck.py)."""
import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

from runs import ENV, REPO

TRAINS = "python dpt.py "  # such a command gets --preflight 1: the run's checks without its minutes of training
ELSEWHERE = {"bench.py": "gpu-check.sh --smoke runs it (tests/test_gpucheck.py)",
             "runlog.py": "its LOG.json is a finished run's log: tests/test_same_rows.py reads real ones"}


def first_command(path: Path) -> str | None:
    """The first shell command of a file's docstring (continuation lines joined), or None."""
    lines = (ast.get_docstring(ast.parse(path.read_text()), clean=False) or "").splitlines()
    for i, line in enumerate(lines):
        command = line.strip()
        if command.startswith(("python ", "./", "bash ")):
            while command.endswith("\\"):
                i += 1
                command = command[:-1] + lines[i].strip()
            return command.split("  #")[0].strip()
    return None


MODULES = sorted(p.name for p in REPO.glob("*.py")) + ["tests/fakedata.py"]

DRIVER = r"""
import json, os, runpy, shlex, sys, traceback
sys.path[:0] = ['.', 'tests']
failures = {}
for module, command in json.loads(sys.argv[1]):
    argv = shlex.split(command)
    try:
        if argv[:2] == ['python', '-c']:
            sys.argv = ['-c', *argv[3:]]
            exec(compile(argv[2], module, 'exec'), {'__name__': '__main__'})
        else:
            script = 'sweep.py' if argv[0] == './run-experiments.sh' else argv[1]
            sys.argv = [script, *argv[1 if argv[0] == './run-experiments.sh' else 2:]]
            runpy.run_path(script, run_name='__main__')
    except SystemExit as stop:
        if stop.code not in (0, None):
            failures[module] = f'exit {stop.code}'
    except BaseException:
        failures[module] = traceback.format_exc(limit=3)
print('FAILURES ' + json.dumps(failures))
"""


def test_every_module_opens_with_a_command():
    missing = [m for m in MODULES if first_command(REPO / m) is None]
    assert not missing, f"no command in the docstring of {missing}"


@pytest.mark.slow
def test_the_opening_commands_run_as_written(tmp_path):
    commands = []
    for module in MODULES:
        if module in ELSEWHERE:
            continue
        command = first_command(REPO / module)
        commands.append((module, command + (" --preflight 1" if command.startswith(TRAINS) else "")))
    root = tmp_path / "repo"
    root.mkdir()
    for entry in REPO.iterdir():
        if entry.name not in ("results", ".git"):
            (root / entry.name).symlink_to(entry)
    proc = subprocess.run([sys.executable, "-c", DRIVER, json.dumps(commands)], cwd=root, env=ENV,
                          capture_output=True, text=True, timeout=600)
    report = [line for line in proc.stdout.splitlines() if line.startswith("FAILURES ")]
    assert report, proc.stdout[-3000:] + proc.stderr[-3000:]
    failures = json.loads(report[-1].removeprefix("FAILURES "))
    assert not failures, "\n".join(f"{m}: {commands[[c[0] for c in commands].index(m)][1]}\n{why}"
                                   for m, why in failures.items()) + proc.stderr[-2000:]
