"""The docs' generated tables: every block between `<!-- generated: NAME ... -->` and `<!-- end generated -->`
in docs/*.md is written here from the records (catalog.py), the parser (flags.py) and the studies
(workload.py, counted by sweep.py), so the docs cannot drift from the code; a test keeps them equal:

    python gendocs.py      # rewrite the generated tables in docs/*.md

It stands above everything it reads, so no module below imports it.
"""
import ast
import inspect
import re
import sys
from pathlib import Path

import catalog as C
import flags
import sweep
import workload


def flags_table() -> str:
    """dpt.py's flags, grouped as --help groups them: flag, default, what it does (its help line)."""
    rows = []
    for group in flags.build_parser()._action_groups:
        actions = [a for a in group._group_actions if a.option_strings and a.dest != "help"]
        if not actions:
            continue
        rows += ["", f"**{group.title}**", "", "| flag | default | meaning |", "|---|---|---|"]
        for a in actions:
            default = "" if a.default in (None, False) else f"`{a.default}`"
            choices = f" ({', '.join(a.choices)})" if a.choices and a.metavar is None else ""
            rows.append(C.markdown_row(f"`{a.option_strings[0]}`", default, f"{a.help or ''}{choices}"))
    return "\n".join(rows[1:])


def studies_table() -> str:
    """run-experiments.sh's studies with the number of runs each has by default (its own dry run)."""
    rows = [C.markdown_row("study", "runs", "what"), "|---|---|---|",
            C.markdown_row("`paper`", str(len(sweep.study(sweep.parse([]))[0])),
                   "the paper's Tables 1-5 and their 3 baselines, 10 seeds")]
    for name, s in workload.STUDIES.items():
        rows.append(C.markdown_row(f"`{name}`", str(len(sweep.study(sweep.parse(["--study", name]))[0])),
                           s.what + " (vanilla baselines included, 10 seeds)"))
    return "\n".join(rows)


def message(node) -> str:
    """An f-string's text, its fields shown as {...}."""
    if isinstance(node, ast.Constant):
        return str(node.value)
    if isinstance(node, ast.JoinedStr):
        return "".join(v.value if isinstance(v, ast.Constant) else "{...}" for v in node.values)
    if isinstance(node, ast.BinOp):
        return message(node.left) + message(node.right)
    if isinstance(node, ast.Name):  # a message made elsewhere: named by its variable
        return f"{{{node.id}}} (a heuristic's own check: heuristics.refusal)" if node.id == "why" else f"{{{node.id}}}"
    return "..."


def api_reference() -> str:
    """The plug-in's public names (importance_dpt.__all__): each signature and docstring, every public
    method's, and every refusal (PlanError) its code can raise, read off the source."""
    import importance_dpt
    from importance_dpt import plugin

    rows = []
    for name in importance_dpt.__all__:
        thing = getattr(importance_dpt, name)
        signature = "" if isinstance(thing, type) and issubclass(thing, Exception) else inspect.signature(thing)
        rows += [f"### `{name}{signature}`", "", inspect.getdoc(thing) or "", ""]
        for method, member in inspect.getmembers(thing, inspect.isfunction):
            if not method.startswith("_") and member.__qualname__.startswith(name + "."):
                rows += [f"- `{name}.{method}{inspect.signature(member)}`: "
                         + " ".join((inspect.getdoc(member) or "").split()), ""]
    tree = ast.parse(inspect.getsource(plugin))
    refusals = [message(node.exc.args[0]) for node in ast.walk(tree) if isinstance(node, ast.Raise)
                and isinstance(node.exc, ast.Call) and getattr(node.exc.func, "id", "") == "PlanError"]
    rows += ["### What it refuses (`PlanError`, one line each)", ""] + [f"- {text}" for text in refusals]
    return "\n".join(rows)


FINDINGS_RUNS = Path(__file__).parent / "docs" / "findings" / "runs"
# Each study of docs/findings.md: the folder of committed runs it reads, and which of its runs are its arms
def sizes_table() -> str:
    """run-experiments.sh --size: each size's workload per task."""
    rows = [C.markdown_row("size", "task", "workload"), "|---|---|---|"]
    for size, tasks in workload.SIZES.items():
        rows += [C.markdown_row(f"`--size {size}`", task, s.what) for task, s in tasks.items()]
    return "\n".join(rows)


# (the studies on one task share a folder, so an arm two studies share is run once).
def arm_cell(warmup: int, interval: int):
    """The runs of one (W, I) setting, and the vanilla runs they are compared with."""
    return lambda r: r.heuristic.eq("none") | (r.warmup_epochs.eq(warmup) & r.interval_epochs.eq(interval))


CELL = arm_cell(4, 2)  # the image studies' one setting beside the partitions study's grid: the most repartitions
# Per study: its task's folder, the runs it compares, and what only its own runs have (until they are
# there, the arms it shares with another study would pass for it)
FINDINGS = {
    "partitions": ("image", lambda r: r.exchange.eq("none") & r.heuristic.isin(["none", "stripes", "blocks", "random"])
                   & (r.heuristic.ne("blocks") | r.measure.eq("variance")) & r.measure.isin(["variance", "average"]),
                   lambda r: r.heuristic.ne("none")),
    "measures": ("image", lambda r: r.exchange.eq("none") & r.heuristic.isin(["none", "stripes", "random"]) & CELL(r),
                 lambda r: ~r.measure.isin(["variance", "average"])),
    "heuristics": ("image", lambda r: r.exchange.eq("none") & r.measure.eq("variance") & CELL(r),
                   lambda r: ~r.heuristic.isin(["none", "stripes", "random", "blocks"])),
    "exchange": ("image", lambda r: r.heuristic.isin(["none", "stripes", "random"]) & r.measure.eq("variance")
                 & CELL(r), lambda r: r.exchange.ne("none")),
    "lm": ("text", lambda r: r.heuristic.notna(), lambda r: r.heuristic.ne("none")),
    "ncf": ("rec", lambda r: r.heuristic.notna(), lambda r: r.heuristic.ne("none")),
}


def findings(study: str) -> str:
    """A study's tables as report.py gives them (its warnings, comparisons and answers) from its committed runs."""
    import report

    folder, arms, own = FINDINGS[study]
    if not (FINDINGS_RUNS / folder).is_dir():
        return f"Not run yet: no runs under docs/findings/runs/{folder} (the section's commands start them)."
    runs, _ = report.load_runs(FINDINGS_RUNS / folder)
    mine = runs[arms(runs)].reset_index(drop=True)
    if not own(mine).any():
        return f"Not run yet: docs/findings/runs/{folder} holds none of this study's own arms."
    return report.answer_section(mine)


GENERATED = {"measures": lambda: C.table("measures"), "studies": studies_table, "sizes": sizes_table,
             "api": api_reference,
             **{f"findings-{study}": (lambda s=study: findings(s)) for study in FINDINGS},
             "heuristics": lambda: C.table("heuristics"), "reducers": lambda: C.table("reducers"),
             "datasets": lambda: C.table("datasets"), "flags": flags_table}


BLOCK = re.compile(r"(<!-- generated: (\S+) [^>]*-->\n)(.*?)(<!-- end generated -->)", re.DOTALL)


def generated_blocks(text: str) -> dict[str, str]:
    """The generated blocks of a docs file: name -> what stands between its markers."""
    return {m[2]: m[3] for m in BLOCK.finditer(text)}


def write_docs(folder: str = "docs") -> list[str]:
    """Rewrite every generated block of folder/*.md from the records; the files changed."""
    changed = []
    for path in sorted(Path(folder).glob("*.md")):
        text = path.read_text()
        new = BLOCK.sub(lambda m: m[1] + GENERATED[m[2]]() + "\n" + m[4], text)
        if new != text:
            path.write_text(new)
            changed.append(str(path))
    return changed


if __name__ == "__main__":
    if sys.argv[1:]:
        sys.exit("usage: python gendocs.py   # rewrite the generated tables in docs/*.md from the records")
    print("\n".join(write_docs()) or "docs/ is up to date")
