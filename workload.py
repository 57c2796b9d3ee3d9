"""What a run trains and how it partitions (a Workload), the paper's tables and the follow-up
studies. Names, titles and folders come from catalog.py.

dpt.py builds a Workload from its flags; results.py names files after it; sweep.py and report.py
list and group runs by it. Torch-free, so flags and sweeps resolve in a fraction of a second:

    python -c "import workload as W; w = W.PAPER_TABLES[1].at(20, 5); print(w, w.title, w.csv_name)"
"""
import re
from dataclasses import dataclass, replace

import catalog as C

PAPER_EPOCHS, PAPER_IGNORE, PAPER_WORKERS = 100, 5, 4


@dataclass(frozen=True)
class Workload:
    """A run but for its seed: (dataset, model, heuristic, measure) and its schedule. A paper table
    is a workload whose warmup and interval are left open (None): the W x I grid."""
    dataset: str
    model: str
    heuristic: str
    measure: str
    total_epochs: int = PAPER_EPOCHS
    warmup_epochs: int | None = None
    interval_epochs: int | None = None
    ignore_epochs: int = PAPER_IGNORE
    reducer: str = "none"  # how gradients are exchanged, and the density of a sparsifying one
    density: float | None = None
    workers: int = PAPER_WORKERS  # n: processes x emulated workers each

    def __post_init__(self):
        assert self.dataset in C.DATASETS and self.model in C.MODELS, self
        assert self.heuristic in C.HEURISTICS and self.measure in C.MEASURES, self
        assert self.reducer in C.REDUCERS and (self.reducer == "none") == (self.density is None), self
        assert self.workers >= 1, self

    def at(self, warmup: int, interval: int) -> "Workload":
        return replace(self, warmup_epochs=warmup, interval_epochs=interval)

    @property
    def task(self) -> str:
        return C.DATASETS[self.dataset].task

    @property
    def vanilla(self) -> bool:
        return self.heuristic == "none"

    @property
    def exchange(self) -> str:
        """The gradient exchange: 'none' (DDP's all-reduce), or reducer@density."""
        return "none" if self.reducer == "none" else f"{self.reducer}@{self.density:g}"

    @property
    def folder(self) -> str:
        if self.vanilla:
            return "Baselines"
        records = (C.DATASETS[self.dataset], C.MODELS[self.model], C.HEURISTICS[self.heuristic],
                   C.MEASURES[self.measure])
        return "-".join(r.folder for r in records)

    @property
    def csv_name(self) -> str:
        """The paper's layout: W<W>-INT<I>.csv, and <c10|c100|fmnist>-vanilla-<model>-total<T>.csv for
        baselines. An E_ignore other than the paper's 5, a reducer, and a number of workers other than
        the paper's 4 are part of the name, so runs that differ in them never share a file (T is in
        the baselines' names and in every file's epoch columns)."""
        exchange = "" if self.reducer == "none" else f"-R{self.reducer}-D{self.density:g}"
        workers = "" if self.workers == PAPER_WORKERS else f"-N{self.workers}"
        if self.vanilla:
            return (f"{C.DATASETS[self.dataset].paper}-vanilla-{self.model}-total{self.total_epochs}{exchange}"
                    f"{workers}.csv")
        ignore = "" if self.ignore_epochs == PAPER_IGNORE else f"-IGN{self.ignore_epochs}"
        return f"W{self.warmup_epochs}-INT{self.interval_epochs}{ignore}{exchange}{workers}.csv"

    @property
    def title(self) -> str:
        """'CIFAR-10, ResNet-18, Stripes, variance' (as the paper's Figure 5 panels)."""
        parts = [C.DATASETS[self.dataset].title, C.MODELS[self.model].title, C.HEURISTICS[self.heuristic].title]
        if not self.vanilla:
            parts.append(C.MEASURES[self.measure].title)
        if self.total_epochs != PAPER_EPOCHS:
            parts.append(f"T={self.total_epochs}")
        if self.ignore_epochs != PAPER_IGNORE and not self.vanilla:
            parts.append(f"E_ignore={self.ignore_epochs}")
        if self.reducer != "none":
            parts.append(f"{self.reducer} at density {self.density:g}")
        if self.workers != PAPER_WORKERS:
            parts.append(f"{self.workers} worker{'s' if self.workers > 1 else ''}")
        return ", ".join(parts)


CSV_SUFFIXES = re.compile(r"(?:-IGN(?P<ignore>\d+))?(?:-R(?P<reducer>[a-z-]+?)-D(?P<density>[0-9.e+]+(?:e-\d+)?))?"
                          r"(?:-N(?P<workers>\d+))?$")


def from_csv_name(stem: str) -> dict:
    """What a result file's name says beyond its folder and its rows: E_ignore (the paper's 5 unless
    named; 0 for baselines), the reducer and its density ("none" and None unless named), the workers
    (the paper's 4 unless named)."""
    found = CSV_SUFFIXES.search(stem)
    ignore = 0 if "-vanilla-" in stem else int(found["ignore"] or PAPER_IGNORE)
    density = float(found["density"]) if found["density"] else None
    return {"ignore_epochs": ignore, "reducer": found["reducer"] or "none", "density": density,
            "workers": int(found["workers"] or PAPER_WORKERS)}


# The paper's Tables 1-5: each a W x I grid of one workload, compared with its dataset and model's baseline.
PAPER_TABLES = {1: Workload("cifar10", "resnet18", "stripes", "variance"),
                2: Workload("cifar10", "resnet18", "stripes", "average"),
                3: Workload("cifar10", "resnet18", "blocks", "variance"),
                4: Workload("cifar10", "resnet34", "stripes", "variance"),
                5: Workload("cifar100", "resnet34", "stripes", "variance")}
PAPER_WARMUPS = (10, 15, 20, 30, 40, 60)
PAPER_INTERVALS = (1, 5, 8, 10, 15, 30)
PAPER_SEEDS = (17611, 74606, 8271, 33432, 15455, 64937, 99740, 58915, 61898, 85405)


@dataclass(frozen=True)
class Size:
    """A size a study runs at on one task: the dataset and model that stand in for its own, the schedule
    and W x I grid, and the dpt.py flags every run gets (run-experiments.sh --size NAME)."""
    dataset: str
    model: str
    total_epochs: int
    ignore_epochs: int
    warmups: tuple[int, ...]
    intervals: tuple[int, ...]
    flags: tuple[str, ...]
    what: str  # for the docs


# Where a run learns in minutes on 2 CPU cores (docs/performance.md). Image: LeNet-5 on the full
# Fashion-MNIST, 4 workers x 32, the paper's optimizer, evaluated in eval mode; T 20: test accuracy
# passes 89% within the first 5 epochs and creeps up after, so W {4, 8} ends warmup before the best
# epochs; I {2, 6} as the paper's I 5 and 30 of T 100 (I 1 would score one-column windows: the
# average). Text: a 2-block GPT of width 128 on 4,000 KJV chunks of 64 bytes, bits per byte still
# falling at T 16. Recommendation: NeuMF on the real MovieLens-100K (943 users), its original sizes.
# A study shrinks these further with flags after -- (docs/findings.md: --subset 10000 for the images).
SIZES = {"cpu": {
    "image": Size("fashionmnist", "lenet5", 20, 1, (4, 8), (2, 6),
                  ("--batch-size", "32", "--eval-protocol", "standard"),
                  "LeNet-5 on Fashion-MNIST, 4 workers x 32, T 20, W {4, 8} x I {2, 6}"),
    "text": Size("kjv", "gpt", 16, 1, (3, 6), (2, 5),
                 ("--subset", "4000", "--test-subset", "500", "--seq-len", "64", "--layers", "2", "--hidden", "128",
                  "--heads", "4", "--batch-size", "16"),
                 "a 2-block GPT (width 128) on 4,000 KJV chunks of 64 bytes, 4 workers x 16, T 16, "
                 "W {3, 6} x I {2, 5}"),
    "rec": Size("movielens-100k", "neumf", 20, 1, (3, 6), (2, 5), ("--batch-size", "256"),
                "NeuMF on MovieLens-100K, 4 workers x 256, T 20, W {3, 6} x I {2, 5}"),
}}


@dataclass(frozen=True)
class Study:
    """A follow-up study: variants of one workload (another measure, another heuristic, ...) on a small
    W x I grid, each against the vanilla baseline. run-experiments.sh --study NAME runs it; report.py
    and plots.ipynb compare the variants that differ in one name side by side."""
    base: Workload  # its T and E_ignore are the study's
    variants: tuple[dict, ...]  # Workload fields to change, one dict per variant ({}: the base itself)
    warmups: tuple[int, ...]
    intervals: tuple[int, ...]
    flags: tuple[str, ...] = ()  # dpt.py flags every run of the study gets (e.g. the optimizer)
    what: str = ""  # for the docs' table of studies

    def tables(self, **change) -> list[Workload]:
        """One workload per variant (W and I open), with `change` applied (e.g. another dataset for a trial)."""
        return list(dict.fromkeys(replace(self.base, **variant, **change) for variant in self.variants))


# W 20 and 40: an early and a late switch after the 5 ignored epochs, both among the paper's best
# cells of Tables 1-3; I 5 and 30: frequent repartitions (where the measure and heuristic act most
# often) and the paper's best interval for Stripes. 4 settings x 10 seeds per variant: as many runs
# per variant as a quarter of a paper table.
STUDY_WARMUPS, STUDY_INTERVALS = (20, 40), (5, 30)
# Language modelling on the King James Bible with the small GPT: 30 epochs (held-out bits per byte
# flattens by then at this size), E_ignore 1 (one epoch of random-init losses), W 5 and 10 x I 2 and
# 5 (repartitions every few epochs, as the image grid's I 5 is 5% of T), AdamW at 3e-3 (SGD at the
# paper's lr diverges or stalls on a GPT). Variants: Stripes over the paper's two measures, and the control.
LM_BASE = Workload("kjv", "gpt", "stripes", "variance", total_epochs=30, ignore_epochs=1)
# Recommendation (ExDyna's third benchmark): NeuMF on MovieLens-1M, 20 epochs (HR@10 settles by then
# at the original's sizes), E_ignore 1, W 3 and 6 x I 2 and 5, Adam at 1e-3 and batch 256 as He et al.
# Variants: Stripes-variance, the random control, and the mean loss and forgetting with Stripes.
NCF_BASE = Workload("movielens-1m", "neumf", "stripes", "variance", total_epochs=20, ignore_epochs=1)
CONTROL = {"heuristic": "random"}  # fixed partitions without importance: in every study beside vanilla
STUDIES = {
    # The paper's question off its setting: its three workloads (Tables 1-3) against vanilla and the control.
    "partitions": Study(PAPER_TABLES[1], ({}, {"measure": "average"}, {"heuristic": "blocks"}, CONTROL),
                        STUDY_WARMUPS, STUDY_INTERVALS,
                        what="the paper's Stripes-variance, Stripes-average and Blocks-variance against the random "
                             "control, W {20, 40} x I {5, 30}"),
    "measures": Study(PAPER_TABLES[1], tuple({"measure": m} for m, r in C.MEASURES.items() if r.studies) + (CONTROL,),
                      STUDY_WARMUPS, STUDY_INTERVALS,
                      what="every measure of the studies with Stripes on Table 1's workload, and the control, "
                           "W {20, 40} x I {5, 30}"),
    "heuristics": Study(PAPER_TABLES[1], tuple({"heuristic": h} for h, r in C.HEURISTICS.items() if r.studies),
                        STUDY_WARMUPS, STUDY_INTERVALS, what="every heuristic with loss variance, the same grid"),
    "lm": Study(LM_BASE, ({}, {"measure": "average"}, CONTROL), (5, 10), (2, 5),
                ("--optimizer", "adamw", "--lr", "0.003", "--weight-decay", "0.1"),
                what="the King James Bible with the small GPT: Stripes-variance, Stripes-average and the control, "
                     "T 30, E_ignore 1, W {5, 10} x I {2, 5}, AdamW at 3e-3"),
    # Gradient sparsification: ExDyna and top-k at densities 0.01 and 0.001 under Stripes-variance and the
    # control at W20-INT5, each against vanilla DPT with the same reducer (dense: the partitions study's
    # runs, DDP's own all-reduce): accuracy against the bytes sent.
    "exchange": Study(PAPER_TABLES[1], tuple({"reducer": r, "density": d, **arm} for r in ("exdyna", "topk")
                                             for d in (0.01, 0.001) for arm in ({}, CONTROL)), (20,), (5,),
                      what="ExDyna and top-k at densities 0.01 and 0.001 under Stripes-variance and the control at "
                           "W20-INT5, each against vanilla DPT with the same reducer"),
    # Disk and network I/O: fixed partitions (random, the paper's two, the movement-saving sticky
    # Stripes, whole shards) against vanilla DPT, each run saving its partitions so that report.py --io
    # simulates what it would fetch under any storage setting (shards of 1 to 1000, caches of 1/n, 2/n).
    "io": Study(PAPER_TABLES[1], (CONTROL, {}, {"heuristic": "blocks"}, {"heuristic": "sticky-stripes"},
                                  {"heuristic": "shard-stripes"}), (20,), (5,), ("--save-partitions",),
                what="random, Stripes, Blocks, sticky Stripes and shard Stripes at W20-INT5, partitions saved for "
                     "report.py --io"),
    "ncf": Study(NCF_BASE, ({}, CONTROL, {"measure": "average"}, {"measure": "forgetting"}),
                 (3, 6), (2, 5), ("--optimizer", "adamw", "--lr", "0.001", "--weight-decay", "0"),
                 what="NeuMF on MovieLens-1M (HR@10): Stripes-variance, the random control, average and forgetting, "
                      "T 20, E_ignore 1, W {3, 6} x I {2, 5}, Adam at 1e-3"),
}
