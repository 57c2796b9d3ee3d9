"""One record per name: the catalog and the registries that implement its names agree, the docs'
tables and every parser's help derive from it, and no name is stated twice."""
import argparse
import importlib
import re
from pathlib import Path

import pytest

import catalog as C
import data
import flags
import gendocs
import heuristics
import importance
import models
import movielens
import reducers
import tasks

REPO = Path(__file__).resolve().parent.parent


def test_every_record_has_its_implementation_and_back():
    assert set(importance.MEASURES) == set(C.MEASURES)
    assert set(heuristics.HEURISTICS) == set(C.HEURISTICS) - {"none"}
    assert set(reducers.REDUCERS) == set(C.REDUCERS) - {"none"}
    assert {C.DATASETS[d].format for d in C.names_of(C.DATASETS, "image")} == set(data.LOADERS)
    assert set(movielens.URLS) == set(C.names_of(C.DATASETS, "rec"))
    for dataset in C.DATASETS:
        tasks.of(dataset)  # imports the task's module, which registers its models
    assert set(models.MODELS) == set(C.MODELS)
    for name, task in C.TASKS.items():
        implementation = importlib.import_module(task.module).TASK
        assert issubclass(implementation, tasks.Task)
        assert all(type(tasks.of(d)) is implementation for d in C.names_of(C.DATASETS, name))
        assert task.default_model in C.names_of(C.MODELS, name)


def test_a_registration_names_a_record_once():
    registry = C.Registry(C.MEASURES, "measure")
    registry.register("average")(len)
    with pytest.raises(AssertionError, match="'no-such-measure' has no record in catalog.py"):
        registry.register("no-such-measure")(len)
    with pytest.raises(AssertionError, match="'average' is registered twice"):
        registry.register("average")(len)
    with pytest.raises(AssertionError, match="variance.*a record in catalog.py without its implementation"):
        registry.complete()
    registry.complete(["average"])


def test_records_refer_to_what_exists():
    for m in C.MEASURES.values():
        assert set(m.channels) <= set(importance.CHANNELS) | set(importance.SCORED), m.name
        assert bool(importance.scored(m.name)) == (m.protocol == "scoring pass"), m.name
        assert m.tiebreak is None or m.tiebreak in C.MEASURES
        assert set(m.meaning) <= set(C.TASKS) and (m.refused or set(m.meaning) == set(C.TASKS)), m.name
    fields = set(heuristics.Context.__dataclass_fields__)
    assert all(h.needs <= fields for h in C.HEURISTICS.values())
    assert all(d.task in C.TASKS for d in C.DATASETS.values()) and all(m.task in C.TASKS for m in C.MODELS.values())
    for model in C.MODELS.values():
        options = {o.dest for o in C.TASKS[model.task].options}
        assert set(model.defaults) <= options, model.name


def test_folder_names_split_back_into_their_parts():
    """<Dataset>-<Model>-<Heuristic>-<Measure>: no name may carry a '-' of its own."""
    for records in (C.DATASETS, C.MODELS, C.HEURISTICS, C.MEASURES):
        folders = [r.folder for r in records.values()]
        assert all("-" not in f for f in folders) and len(set(folders)) == len(folders)


def test_the_papers_names_round_trip():
    assert {h: C.HEURISTICS[h].paper for h in ("none", "stripes", "blocks")} == \
        {"none": "none", "stripes": "roundrobin", "blocks": "steps"}
    assert C.ALIASES == {"roundrobin": "stripes", "steps": "blocks"}
    assert flags.parse_args(["--heuristic", "roundrobin"]).heuristic == "stripes"


def test_the_docs_tables_are_the_records():
    """Every generated block in docs/ equals what `python gendocs.py` writes from the records."""
    seen = set()
    for path in sorted((REPO / "docs").glob("*.md")):
        for name, body in gendocs.generated_blocks(path.read_text()).items():
            assert body == gendocs.GENERATED[name]() + "\n", f"{path.name}: run `python gendocs.py`"
            seen.add(name)
    assert seen == set(gendocs.GENERATED)
    measures = gendocs.generated_blocks((REPO / "docs" / "measures.md").read_text())["measures"]
    assert all(f"| `{name}` |" in measures for name in C.MEASURES)


def parsers() -> dict[str, argparse.ArgumentParser]:
    import bench
    import report
    import streaming
    import sweep

    return {"dpt.py": flags.build_parser(), "run-experiments.sh": sweep.build_parser(),
            "report.py": report.build_parser(), "bench.py": bench.build_parser(),
            "streaming.py write": streaming.build_parser()._subparsers._group_actions[0].choices["write"]}


@pytest.mark.parametrize("name", ["dpt.py", "run-experiments.sh", "report.py", "bench.py", "streaming.py write"])
def test_every_option_has_one_help_line_with_one_default_and_each_choice_once(name):
    parser = parsers()[name]
    formatter = parser._get_formatter()
    for action in parser._actions:
        if action.dest == "help" or not action.option_strings:
            continue
        assert action.help, f"{name} {action.option_strings[0]} has no help"
        text = formatter._expand_help(action) if action.help else ""
        assert text.count("default") <= 1, f"{name} {action.option_strings[0]}: {text}"
        if action.choices:  # listed in one place: argparse's {a,b,...} or the help's own list, not both
            mentioned = [c for c in action.choices if re.search(rf"(?<![\w-]){re.escape(str(c))}(?![\w-])", text)]
            if action.metavar is None:
                assert len(mentioned) < len(action.choices), (name, action.option_strings[0], text)
            else:
                assert mentioned == list(action.choices), (name, action.option_strings[0], text)


@pytest.mark.parametrize("dataset", C.names_of(C.DATASETS, "image"))
@pytest.mark.parametrize("model", C.names_of(C.MODELS, "image"))
def test_every_image_model_takes_every_image_datasets_shape(dataset, model):
    """A model is sized from the data's record (models.DataShape), never from what it was first written for."""
    import torch

    args = flags.parse_args(["--dataset", dataset, "--model", model])
    task = tasks.of(dataset)
    net = task.build_model(args, None, workers=2)
    spec = C.DATASETS[dataset]
    assert net(torch.zeros(4, *spec.shape)).shape == (4, spec.classes)
    assert models.parameters(model, args, task.shape(None)) == sum(p.numel() for p in net.parameters())
