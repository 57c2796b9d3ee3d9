"""The one table of names (workload.py, torch-free, what flags and reports use) agrees with the
registries that implement the names, and with the paper's CSV names."""
import heuristics
import importance
import reducers
import workload


def test_every_name_has_its_implementation():
    assert set(workload.HEURISTICS) - {"none"} == set(heuristics.HEURISTICS)
    assert set(workload.MEASURES) == set(importance.MEASURES)
    assert set(workload.REDUCERS) - {"none"} == set(reducers.REDUCERS)


def test_what_has_no_meaning_on_text_is_what_the_registries_say():
    no_text_measures = {m for m, measure in importance.MEASURES.items() if measure.text is None}
    label_heuristics = {h for h, needs in heuristics.NEEDS.items() if "labels" in needs}
    assert set(workload.NOT_ON_TEXT) == no_text_measures | label_heuristics


def test_the_papers_names_round_trip():
    assert {h: n.paper for h, n in workload.HEURISTICS.items() if h in ("none", "stripes", "blocks")} == \
        {"none": "none", "stripes": "roundrobin", "blocks": "steps"}
    assert all(workload.ALIASES[n.paper] == h for h, n in workload.HEURISTICS.items())


def test_folder_names_split_back_into_their_parts():
    """<Dataset>-<Model>-<Heuristic>-<Measure>: no name may carry a '-' of its own."""
    for table in (workload.DATASETS, workload.TEXT_DATASETS, workload.MODELS, workload.HEURISTICS, workload.MEASURES):
        assert all("-" not in name.folder for name in table.values())
