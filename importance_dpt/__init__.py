"""Importance-aware data-parallel training (Sheikholeslami et al., DAIS 2023) in your own training loop:
`pip install .` from a clone (or `pip install -e .`) installs this package, with torch its only need.

    from importance_dpt import ImportanceAware
    plan = ImportanceAware(train_set, epochs=30, warmup=10, interval=5, measure="variance", heuristic="stripes")
    loader = DataLoader(plan.dataset, batch_size=256, sampler=plan.sampler)      # yields (index, example)
    loss = plan.update(F.cross_entropy(model(x), y, reduction="none"), index)  # records; the mean to backpropagate

Every public name and what it refuses: docs/api.md. The package is the repository's own modules
(catalog, importance, heuristics, samplers, schedule, runlog: the files dpt.py runs on) and plugin.py.
"""
from .plugin import ImportanceAware, Indexed, PlanError, WindowSampler

__all__ = ["ImportanceAware", "Indexed", "PlanError", "WindowSampler"]
