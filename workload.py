"""What a run trains and how it partitions (a Workload), and the one table of names: the flag
values, the names the paper's code and CSVs use, and the names folders and titles show.

dpt.py builds a Workload from its flags; results.py names files after it; sweep.py and report.py
list and group runs by it. Torch-free, so flags and sweeps resolve in a fraction of a second:

    python -c "import workload as W; w = W.PAPER_TABLES[1].at(20, 5); print(w, w.title, w.csv_name)"
"""
import re
from dataclasses import dataclass, replace
from typing import NamedTuple


class Name(NamedTuple):
    folder: str  # in result folder names: <Dataset>-<Model>-<Heuristic>-<Measure> (no '-' inside)
    title: str   # in tables and figures
    paper: str   # in CSV rows: the paper's code's name where it had one


# task: "image" rows report test accuracy (higher is better); "text" rows held-out bits per byte (lower).
DATASETS = {
    "cifar10": Name("CIFAR10", "CIFAR-10", "c10"),
    "cifar100": Name("CIFAR100", "CIFAR-100", "c100"),
    "fashionmnist": Name("FashionMNIST", "Fashion-MNIST", "fmnist"),
}
TEXT_DATASETS = {
    "kjv": Name("KJV", "King James Bible", "kjv"),
    "text": Name("Text", "text file", "text"),  # --text-file: a user's corpus
}
MODELS = {
    "resnet18": Name("ResNet18", "ResNet-18", "resnet18"),
    "resnet34": Name("ResNet34", "ResNet-34", "resnet34"),
    "lstm": Name("LSTM", "LSTM", "lstm"),
    "gpt": Name("GPT", "GPT", "gpt"),
}
IMAGE_MODELS, TEXT_MODELS = ("resnet18", "resnet34"), ("lstm", "gpt")
# Names with no meaning on language modelling (importance.MEASURES[...].text is None; heuristics reading labels).
NOT_ON_TEXT = {"forgetting": "a chunk is not right or wrong as a whole, only its tokens are",
               "class-stripes": "text chunks have no class"}
HEURISTICS = {
    "none": Name("Vanilla", "vanilla DPT", "none"),
    "stripes": Name("Stripes", "Stripes", "roundrobin"),
    "blocks": Name("Blocks", "Blocks", "steps"),
    "random": Name("Random", "random", "random"),
    "snake": Name("Snake", "snake", "snake"),
    "balance": Name("Balance", "balance", "balance"),
    "class-stripes": Name("ClassStripes", "class Stripes", "class-stripes"),
    "blocks-rotate": Name("BlocksRotate", "rotating Blocks", "blocks-rotate"),
    "sticky-stripes": Name("StickyStripes", "sticky Stripes", "sticky-stripes"),
    "shard-stripes": Name("ShardStripes", "shard Stripes", "shard-stripes"),
}
MEASURES = {
    "average": Name("Average", "average", "average"),
    "variance": Name("Variance", "variance", "variance"),
    "forgetting": Name("Forgetting", "forgetting", "forgetting"),
    "confidence": Name("Confidence", "confidence", "confidence"),
    "variability": Name("Variability", "variability", "variability"),
    "ab-variance": Name("ABVariance", "active-bias variance", "ab-variance"),
    "ab-closeness": Name("ABCloseness", "active-bias closeness", "ab-closeness"),
    "el2n": Name("EL2N", "EL2N", "el2n"),
    "grad-norm": Name("GradNorm", "gradient norm", "grad-norm"),
}
ALIASES = {n.paper: h for h, n in HEURISTICS.items()}  # roundrobin -> stripes, steps -> blocks
# Gradient reducers (reducers.py, a DDP communication hook): "none" is DDP's own dense all-reduce.
REDUCERS = ("none", "exact", "exdyna", "micro", "topk", "global-topk", "threshold", "cltk", "gaussiank")

PAPER_EPOCHS, PAPER_IGNORE = 100, 5


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

    def __post_init__(self):
        assert self.dataset in DATASETS or self.dataset in TEXT_DATASETS, self.dataset
        assert self.model in MODELS and self.heuristic in HEURISTICS and self.measure in MEASURES, self
        assert self.reducer in REDUCERS and (self.reducer == "none") == (self.density is None), self

    def at(self, warmup: int, interval: int) -> "Workload":
        return replace(self, warmup_epochs=warmup, interval_epochs=interval)

    @property
    def task(self) -> str:
        return "text" if self.dataset in TEXT_DATASETS else "image"

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
        names = (_names(self.dataset), MODELS[self.model], HEURISTICS[self.heuristic], MEASURES[self.measure])
        return "-".join(n.folder for n in names)

    @property
    def csv_name(self) -> str:
        """The paper's layout: W<W>-INT<I>.csv, and <c10|c100|fmnist>-vanilla-<model>-total<T>.csv for
        baselines. An E_ignore other than the paper's 5 is part of the name, so runs that differ in it
        never share a file."""
        exchange = "" if self.reducer == "none" else f"-R{self.reducer}-D{self.density:g}"
        if self.vanilla:
            return f"{_names(self.dataset).paper}-vanilla-{self.model}-total{self.total_epochs}{exchange}.csv"
        ignore = "" if self.ignore_epochs == PAPER_IGNORE else f"-IGN{self.ignore_epochs}"
        return f"W{self.warmup_epochs}-INT{self.interval_epochs}{ignore}{exchange}.csv"

    @property
    def title(self) -> str:
        """'CIFAR-10, ResNet-18, Stripes, variance' (as the paper's Figure 5 panels)."""
        parts = [_names(self.dataset).title, MODELS[self.model].title, HEURISTICS[self.heuristic].title]
        if not self.vanilla:
            parts.append(MEASURES[self.measure].title)
        if self.total_epochs != PAPER_EPOCHS:
            parts.append(f"T={self.total_epochs}")
        if self.ignore_epochs != PAPER_IGNORE and not self.vanilla:
            parts.append(f"E_ignore={self.ignore_epochs}")
        if self.reducer != "none":
            parts.append(f"{self.reducer} at density {self.density:g}")
        return ", ".join(parts)


def _names(dataset: str) -> Name:
    return DATASETS.get(dataset) or TEXT_DATASETS[dataset]


CSV_SUFFIXES = re.compile(r"(?:-IGN(?P<ignore>\d+))?(?:-R(?P<reducer>[a-z-]+)-D(?P<density>[0-9.e+-]+))?$")


def from_csv_name(stem: str) -> dict:
    """What a result file's name says beyond its folder and its rows: E_ignore (the paper's 5 unless
    named; 0 for baselines), the reducer and its density ("none" and None unless named)."""
    found = CSV_SUFFIXES.search(stem)
    ignore = 0 if "-vanilla-" in stem else int(found["ignore"] or PAPER_IGNORE)
    density = float(found["density"]) if found["density"] else None
    return {"ignore_epochs": ignore, "reducer": found["reducer"] or "none", "density": density}


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
class Study:
    """A follow-up study: variants of one workload (another measure, another heuristic, ...) on a small
    W x I grid, each against the vanilla baseline. run-experiments.sh --study NAME runs it; report.py
    and plots.ipynb compare the variants that differ in one name side by side."""
    base: Workload  # its T and E_ignore are the study's
    variants: tuple[dict, ...]  # Workload fields to change, one dict per variant ({}: the base itself)
    warmups: tuple[int, ...]
    intervals: tuple[int, ...]
    flags: tuple[str, ...] = ()  # dpt.py flags every run of the study gets (e.g. the optimizer)

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
# paper's lr diverges or stalls on a GPT). Variants: vanilla and Stripes-variance, the p-based and
# gradient measures with Stripes, and the random control and the movement-saving heuristics with variance.
LM_BASE = Workload("kjv", "gpt", "stripes", "variance", total_epochs=30, ignore_epochs=1)
STUDIES = {
    "measures": Study(PAPER_TABLES[1], tuple({"measure": m} for m in MEASURES), STUDY_WARMUPS, STUDY_INTERVALS),
    "heuristics": Study(PAPER_TABLES[1], tuple({"heuristic": h} for h in HEURISTICS if h != "none"), STUDY_WARMUPS,
                        STUDY_INTERVALS),
    "lm": Study(LM_BASE, ({}, {"measure": "average"}, {"measure": "confidence"}, {"measure": "el2n"},
                          {"measure": "grad-norm"}, {"heuristic": "random"}, {"heuristic": "snake"},
                          {"heuristic": "sticky-stripes"}),
                (5, 10), (2, 5), ("--optimizer", "adamw", "--lr", "0.003", "--weight-decay", "0.1")),
    # Gradient sparsification: every reducer at density 0.01 (exact: dense) under Stripes-variance at
    # W20-INT5, each against vanilla DPT with the same reducer: accuracy against the bytes sent.
    "exchange": Study(PAPER_TABLES[1], tuple({"reducer": r, "density": 1.0 if r == "exact" else 0.01}
                                             for r in REDUCERS if r != "none"), (20,), (5,)),
    # Disk and network I/O: fixed partitions (random, the paper's two, the movement-saving sticky
    # Stripes, whole shards) against vanilla DPT, each run saving its partitions so that report.py --io
    # simulates what it would fetch under any storage setting (shards of 1 to 1000, caches of 1/n, 2/n).
    "io": Study(PAPER_TABLES[1], ({"heuristic": "random"}, {}, {"heuristic": "blocks"}, {"heuristic": "sticky-stripes"},
                                  {"heuristic": "shard-stripes"}), (20,), (5,), ("--save-partitions",)),
}
