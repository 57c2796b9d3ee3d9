"""Run dpt.py and SIGKILL it at a chosen moment: the N-th call of a function (a test's fault injector).

    python tests/die_at.py train.train_epoch 3 -- <dpt.py flags>      # killed as it starts its 3rd epoch
    python tests/die_at.py results.write_bytes 2 --half -- <flags>    # killed halfway through the 2nd checkpoint
    python tests/die_at.py results.write_json 1 --signal SIGTERM -- <flags>   # signalled as it writes its log

With --half the call writes half of the file's bytes to its temporary file, then dies: what a
power cut during the write leaves behind. With --signal the process sends itself that signal instead
(its handler runs at once, inside the call) and goes on as dpt.py's handlers decide.
"""
import importlib
import os
import signal
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
target, count, *rest = sys.argv[1:]
options, argv = rest[:rest.index("--")], rest[rest.index("--") + 1:]
half = "--half" in options
sent = signal.Signals[options[options.index("--signal") + 1]] if "--signal" in options else signal.SIGKILL
module_name, *owners, function_name = target.split(".")  # module.function or module.Class.method
owner = importlib.import_module(module_name)
for name in owners:
    owner = getattr(owner, name)
original = getattr(owner, function_name)
calls = 0


def dying(*args, **kwargs):
    global calls
    calls += 1
    if calls == int(count):
        if half:  # results.write_bytes(path, data): half of it in the temporary that the rename would publish
            path, data = args[0], args[1]
            (path.parent / f".{path.name}.killed").write_bytes(data[: len(data) // 2])
        os.kill(os.getpid(), sent)
    return original(*args, **kwargs)


setattr(owner, function_name, dying)  # dpt looks these up at call time (module.function, or its own globals)
importlib.import_module("dpt").main(argv)
