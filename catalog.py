"""The catalog: one record per name (task, dataset, model, measure, heuristic, reducer), and every
fact about it that more than one place needs. Flags' choices and help, folder and file names, the
result row's metric, the studies, report.py, bench.py and the docs' tables all derive from here, so a
new name is its implementation plus one record. Torch-free (flags and sweeps resolve without torch):

    python -c "import catalog; print(catalog.MEASURES['variance']); print(catalog.table('heuristics'))"

gendocs.py writes the docs' tables from these records (`python gendocs.py`).

An implementation binds its name where it is defined, through a Registry (`@MEASURES.register("name")`
in importance.py, and so for heuristics, reducers and models), which checks the name against its
record at import; image datasets need no code of their own (their record's `format` picks the
loader). tests/test_catalog.py checks that docs/ and --help agree with the records.
"""
from argparse import Namespace
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Option:
    """A flag only one task reads (its group in dpt.py's parser). `minimum`: the smallest value allowed
    (None: no bound); a default of None is filled in per model (Model.defaults) or left unset."""
    flag: str
    type: type
    default: object
    help: str
    minimum: float | None = None
    below: float | None = None  # values must be < this

    @property
    def dest(self) -> str:
        return self.flag.lstrip("-").replace("-", "_")


@dataclass(frozen=True)
class Task:
    """What a run learns: its metric (the row's best_<metric> column), how it is evaluated, and the
    module holding its implementation (a class with the methods of tasks.Task)."""
    name: str
    title: str
    module: str  # the implementation: <module>.TASK
    metric: str  # the row's column is best_<metric>
    epoch_key: str  # the per-epoch figure (JSON log) that is the metric
    metric_title: str  # in tables and figures
    metric_name: str  # on the console: "best <metric_name> <value><unit>"
    unit: str
    higher_is_better: bool
    decimals: int  # of the metric in the CSV rows
    default_model: str
    eval_protocols: tuple[str, ...]  # the first is the default
    has_labels: bool  # an example has a class (heuristics that read labels need it)
    streams: bool  # --data-source streaming serves it
    options: tuple[Option, ...] = ()
    flag_group: str = ""
    chance: Callable[["Dataset"], float] = lambda dataset: 0.0  # the metric of a model that learned nothing

    @property
    def column(self) -> str:
        return f"best_{self.metric}"


@dataclass(frozen=True)
class Dataset:
    name: str
    folder: str  # in result folder names: <Dataset>-<Model>-<Heuristic>-<Measure> (no '-' inside)
    title: str
    paper: str  # the paper's code's short name (baseline file names)
    task: str
    source: str
    classes: int = 0
    shape: tuple[int, ...] = ()  # an image's (channels, height, width)
    mean: tuple[float, ...] = ()  # Normalize's, as the paper's code
    std: tuple[float, ...] = ()
    crop_padding: int = 0  # RandomCrop(size, padding); 0: no crop
    train_files: tuple[str, ...] = ()  # what a local copy must hold (for the error message)
    test_files: tuple[str, ...] = ()
    format: str = ""  # an image dataset's files: "cifar" (pickled batches) or "idx" (data.LOADERS)
    torchvision: str = ""  # torchvision.datasets' class: the download, and its folder <data-dir>/<class>/raw
    pixel_mean: float = 0.0  # the training images' mean / 255: tells the IDX datasets, which share file names, apart
    debian_folder: str = ""  # where a Debian package puts the files
    debian_package: str = ""

    @property
    def example_bytes(self) -> int:
        """Bytes of one example as uint8 (the I/O simulator's unit); 0 when it depends on flags (text)."""
        size = 1
        for s in self.shape:
            size *= s
        return size if self.shape else 0


@dataclass(frozen=True)
class Model:
    name: str
    folder: str
    title: str
    task: str
    source: str
    batchnorm: bool = False  # training-mode BatchNorm cannot normalize a batch of one
    defaults: dict = field(default_factory=dict)  # the task options it reads, and their values when not given
    check: Callable[[Namespace], str | None] | None = None  # a constraint among its options: the fix, or None


@dataclass(frozen=True)
class Measure:
    name: str
    folder: str
    title: str
    source: str
    channels: tuple[str, ...]  # the per-example signals a run must record for it
    score: str  # the formula, for the docs (higher: more important, sorted first)
    meaning: dict  # task -> what it measures there; a task missing: refused there (the why in `refused`)
    tiebreak: str | None = None  # equal scores are ordered by this measure (descending), then by index
    protocol: str = "training pass"  # "training pass": from the forward pass that trains; "scoring pass": its own
    estimator: str = ""  # over what, and how (the docs' table)
    refused: str = ""  # why it means nothing on the tasks `meaning` leaves out
    coincides: str = ""  # when it orders examples as another measure does
    studies: bool = True  # one arm of `run-experiments.sh --study measures`


@dataclass(frozen=True)
class Heuristic:
    name: str
    folder: str
    title: str
    paper: str  # in CSV rows (the paper's code's names where it had one)
    source: str
    partition: str  # what it does, for the docs
    guarantee: str
    needs: frozenset = frozenset()  # heuristics.Context fields it reads
    studies: bool = True


@dataclass(frozen=True)
class Reducer:
    name: str
    title: str
    source: str
    exchange: str  # what it sends, for the docs
    studies: bool = True


class Registry(dict):
    """name -> implementation, each bound where it is defined: `@REGISTRY.register(name, **fields)` on the
    function (`make(function, **fields)` when the entry is more than the function), or `add(name, value)`.
    A name must have its record in `records`, once; `complete()`, at the end of the module(s) that define
    them, checks that every record (but `exempt`) has its implementation."""

    def __init__(self, records: dict, kind: str, make: Callable | None = None, exempt: tuple[str, ...] = ()):
        super().__init__()
        self.records, self.kind, self.make, self.exempt = records, kind, make, exempt

    def add(self, name: str, value: object) -> None:
        assert name in self.records, f"{self.kind} {name!r} has no record in catalog.py: add one beside the others"
        assert name not in self, f"{self.kind} {name!r} is registered twice"
        self[name] = value

    def register(self, name: str, **fields) -> Callable:
        def bind(function: Callable) -> Callable:
            self.add(name, self.make(function, **fields) if self.make else function)
            return function
        return bind

    def complete(self, names: list[str] | None = None) -> None:
        missing = [n for n in (self.records if names is None else names) if n not in self and n not in self.exempt]
        assert not missing, f"{self.kind} {', '.join(missing)}: a record in catalog.py without its implementation"


# The optimizer's kernels (models.optimizer): torch's choice, one per parameter, per group, one fused.
OPTIMIZER_IMPLS = ("default", "for-loop", "foreach", "fused")

# ---- tasks ---------------------------------------------------------------------------------------

def _text_options() -> tuple[Option, ...]:
    return (Option("--text-file", str, None, "with --dataset text: any UTF-8 file (e.g. Tiny Shakespeare)"),
            Option("--seq-len", int, 128, "tokens (bytes) a chunk predicts", minimum=1),
            Option("--layers", int, None, "LSTM layers or GPT blocks", minimum=1),
            Option("--hidden", int, None, "LSTM embedding and hidden size, GPT width", minimum=1),
            Option("--heads", int, None, "GPT attention heads", minimum=1),
            Option("--dropout", float, None, "dropout probability", minimum=0, below=1))


def _rec_options() -> tuple[Option, ...]:
    return (Option("--factors", int, 8, "NeuMF's GMF factors (and its MLP's last width)", minimum=1),
            Option("--mlp-width", int, 64, "NeuMF's first MLP width (user and item embeddings of half each), "
                   "halving down to --factors", minimum=2),
            Option("--negatives", int, 4, "sampled negatives per training positive, redrawn each epoch", minimum=1),
            Option("--test-negatives", int, 100, "items each held-out one is ranked against (He et al.: 99)",
                   minimum=1))


TASKS = {
    "image": Task("image", "image classification", "imagetask", "accuracy", "test_accuracy", "best test accuracy (%)",
                  "test accuracy", "%", True, 2, "resnet18", ("paper", "standard"), has_labels=True, streams=True,
                  chance=lambda dataset: 100 / dataset.classes),
    "text": Task("text", "language modelling", "texttask", "bits_per_byte", "bits_per_byte",
                 "best held-out bits per byte", "held-out", " bits per byte", False, 4, "gpt", ("standard",),
                 has_labels=False, streams=False, options=_text_options(),
                 flag_group="an example is a chunk of --seq-len + 1 bytes",
                 chance=lambda dataset: 8.0),  # a uniform guess over the 256 bytes
    "rec": Task("rec", "recommendation", "rectask", "hr10", "hr10", "best HR@10 (%)", "HR@10", "%", True, 2, "neumf",
                ("standard",), has_labels=False, streams=False, options=_rec_options(),
                flag_group="an example is an interaction or one of its --negatives sampled negatives",
                chance=lambda dataset: 100 * 10 / 101),  # a random rank among the default 100 negatives
}

# ---- datasets ------------------------------------------------------------------------------------

CIFAR_MEAN, CIFAR_STD = (0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)  # the paper's code's constants
IDX_TRAIN = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz")
IDX_TEST = ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")
DATASETS = {d.name: d for d in (
    Dataset("cifar10", "CIFAR10", "CIFAR-10", "c10", "image", "Krizhevsky 2009 (torchvision's download)", 10,
            (3, 32, 32), CIFAR_MEAN, CIFAR_STD, 4, tuple(f"cifar-10-batches-py/data_batch_{i}" for i in range(1, 6)),
            ("cifar-10-batches-py/test_batch",), format="cifar", torchvision="CIFAR10"),
    Dataset("cifar100", "CIFAR100", "CIFAR-100", "c100", "image", "Krizhevsky 2009 (torchvision's download)", 100,
            (3, 32, 32), CIFAR_MEAN, CIFAR_STD, 4, ("cifar-100-python/train",), ("cifar-100-python/test",),
            format="cifar", torchvision="CIFAR100"),
    Dataset("fashionmnist", "FashionMNIST", "Fashion-MNIST", "fmnist", "image",
            "Xiao et al. 2017 (Debian's dataset-fashion-mnist, or torchvision's download)", 10, (1, 28, 28),
            (0.1307,), (0.3081,), 0, IDX_TRAIN, IDX_TEST, format="idx", torchvision="FashionMNIST", pixel_mean=0.2860,
            debian_folder="/usr/share/datasets/fashion-mnist", debian_package="dataset-fashion-mnist"),
    Dataset("mnist", "MNIST", "MNIST", "mnist", "image", "LeCun et al. 1998 (torchvision's download)", 10,
            (1, 28, 28), (0.1307,), (0.3081,), 0, IDX_TRAIN, IDX_TEST, format="idx", torchvision="MNIST",
            pixel_mean=0.1307),
    Dataset("kjv", "KJV", "King James Bible", "kjv", "text", "Debian's bible-kjv"),
    Dataset("text", "Text", "text file", "text", "text", "the UTF-8 file given by --text-file"),
    Dataset("movielens-100k", "ML100K", "MovieLens 100K", "ml100k", "rec", "GroupLens (ml-100k.zip's u.data), or "
            "the same ratings in RecBole's atomic file (setup.sh takes it from RecBole's wheel on PyPI)",
            train_files=("ml-100k/u.data", "ml-100k/ml-100k.inter")),
    Dataset("movielens-1m", "ML1M", "MovieLens 1M", "ml1m", "rec", "GroupLens (ml-1m.zip)",
            train_files=("ml-1m/ratings.dat",)),
    Dataset("movielens-20m", "ML20M", "MovieLens 20M", "ml20m", "rec", "GroupLens (ml-20m.zip)",
            train_files=("ml-20m/ratings.csv",)),
    Dataset("generated-ratings", "Generated", "generated ratings (not MovieLens)", "generated", "rec",
            "movielens.generate: a seeded generator in MovieLens-1M's layout, for a machine without MovieLens",
            train_files=("generated-ratings/ratings.dat",)),
)}

# ---- models --------------------------------------------------------------------------------------


def _gpt_heads(args: Namespace) -> str | None:
    if args.hidden % args.heads:
        return (f"--hidden {args.hidden} must be a multiple of --heads {args.heads} "
                "(the GPT splits its width over the heads)")
    return None


def _neumf_widths(args: Namespace) -> str | None:
    w, f = args.mlp_width, args.factors
    if w % 2 or w % f or (w // f) & (w // f - 1):
        return (f"--mlp-width {w} must be even (the user and item embeddings take half each) and --factors {f} "
                "times a power of 2 (NeuMF's MLP halves its width down to it)")
    return None


MODELS = {m.name: m for m in (
    Model("resnet18", "ResNet18", "ResNet-18", "image", "torchvision, as the paper's code adapted it", batchnorm=True),
    Model("resnet34", "ResNet34", "ResNet-34", "image", "torchvision, as the paper's code adapted it", batchnorm=True),
    Model("lenet5", "LeNet5", "LeNet-5", "image", "LeCun et al. 1998, with Caffe's widths and BatchNorm (a CPU model)",
          batchnorm=True),
    Model("lstm", "LSTM", "LSTM", "text", "PyTorch's word_language_model example, byte-level",
          defaults={"layers": 2, "hidden": 256, "dropout": 0.2}),
    Model("gpt", "GPT", "GPT", "text", "nanoGPT's baby GPT (pre-norm, tied embedding)",
          defaults={"layers": 4, "hidden": 128, "heads": 4, "dropout": 0.0}, check=_gpt_heads),
    Model("neumf", "NeuMF", "NeuMF", "rec", "He et al., Neural Collaborative Filtering, WWW 2017 (GMF + MLP)",
          check=_neumf_widths),
)}

# ---- importance measures -------------------------------------------------------------------------

PAPER = "Sheikholeslami et al., DAIS 2023 (the paper reproduced here)"
CARTOGRAPHY = "Swayamdipta et al., Dataset Cartography, EMNLP 2020"
ACTIVE_BIAS = "Chang et al., Active Bias, NeurIPS 2017"
DATA_DIET = "Paul et al., Deep Learning on a Data Diet, NeurIPS 2021"
P_TEXT = "p: the chunk's geometric-mean true-token probability exp(-mean token loss)"
NO_SCORING_PASS = ("a scoring pass has no epoch, and a sampled negative's item exists only within one "
                   "(recommendation)")
P_REC = "p: the predicted probability of the interaction's label (a negative's: of that slot's draws)"
P_REC_LOSS = "mean binary cross-entropy (a negative's slot: of the items drawn for it each epoch)"
E1 = "at E = 1 (one-epoch windows) it orders as average"
MEASURES = {m.name: m for m in (
    Measure("average", "Average", "average", PAPER, ("loss",), "mean loss over the window (`torch.var_mean`)",
            {"image": "mean loss", "text": "mean chunk loss (its mean token cross-entropy)", "rec": P_REC_LOSS},
            estimator="mean over the window's E epochs"),
    Measure("variance", "Variance", "variance", PAPER, ("loss",),
            "unbiased variance of the loss (one column: the average, as the paper's code)",
            {"image": "loss variance", "text": "variance of the chunk loss",
             "rec": "variance of its binary cross-entropy"},
            estimator="unbiased variance (ddof 1, `torch.var_mean`)", coincides=E1),
    Measure("forgetting", "Forgetting", "forgetting", "Toneva et al., An Empirical Study of Example Forgetting, "
            "ICLR 2019", ("correct", "loss"),
            "1 -> 0 transitions of correctness between consecutive epochs over the whole run so far; never learned: "
            "the epochs so far (their code's count)",
            {"image": "forgetting events", "rec": "forgetting events of the score's sign"}, tiebreak="average",
            estimator="whole-run counts (checkpointed), not the window's",
            refused="a chunk is not right or wrong as a whole, only its tokens are"),
    Measure("confidence", "Confidence", "confidence", CARTOGRAPHY, ("loss",), "1 - mean p, p = exp(-loss)",
            {"image": "1 - mean true-class probability", "text": P_TEXT, "rec": P_REC}, tiebreak="average",
            estimator="mean over the window", coincides=E1 + " (1 - exp(-loss) rises with the loss)"),
    Measure("variability", "Variability", "variability", CARTOGRAPHY, ("loss",), "std of p",
            {"image": "std of the true-class probability", "text": P_TEXT, "rec": P_REC}, tiebreak="average",
            estimator="population std (ddof 0, as cartography's code)", coincides=E1 + " (its score is 0)"),
    Measure("ab-variance", "ABVariance", "active-bias variance", ACTIVE_BIAS, ("loss",),
            "sqrt(var p + var(p)^2 / (E - 1)) (E = 1: 0)",
            {"image": "prediction variance with its confidence term", "text": P_TEXT, "rec": P_REC}, tiebreak="average",
            estimator="unbiased variance (ddof 1; the public reimplementation uses ddof 0: for a fixed E either "
                      "is a monotone function of the other)",
            coincides="orders as variability at every E (a rising function of the variance for a fixed window "
                      "length): the same partitions under every heuristic that reads the order only; its values "
                      "differ, which balance reads. Left out of the measures study for that reason",
            studies=False),
    Measure("ab-closeness", "ABCloseness", "active-bias closeness", ACTIVE_BIAS, ("loss",), "mean p (1 - mean p)",
            {"image": "closeness of the true-class probability to 1/2", "rec": P_REC}, tiebreak="average",
            estimator="mean over the window, then p (1 - p)",
            refused="a byte-level model's p = exp(-mean token loss) is far below 1/2 (median 0.1 on the KJV), where "
                    "p (1 - p) rises with p: it would rank the easiest chunks first"),
    Measure("el2n", "EL2N", "training-dynamics EL2N", DATA_DIET, ("el2n", "loss"),
            "mean \u2016softmax - onehot\u2016 over the window, from the forward pass that trains",
            {"image": "EL2N of the training pass (train-mode BatchNorm, augmented, weights moving)",
             "text": "mean over the chunk's tokens", "rec": "sqrt(2) |p - label| (two classes)"}, tiebreak="average",
            estimator="mean over the window's epochs (Data Diet's is one early checkpoint in eval mode: dd-el2n)"),
    Measure("grad-norm", "GradNorm", "last-layer gradient norm",
            "Paul et al. 2021 (GraNd), last-layer proxy after Katharopoulos & Fleuret, ICML 2018",
            ("grad_norm", "loss"), "mean \u2016p - y\u2016 sqrt(\u2016h\u2016^2 + 1): the last layer's part of the "
            "gradient norm, from the training pass", {"image": "last-layer gradient norm",
             "text": "the head path's gradient over the chunk (the GPT ties its head to the byte embedding: the "
                     "matrix's whole gradient also carries the embedding path, which this leaves out)",
             "rec": "|p - label| sqrt(||h||^2 + 1) of NeuMF's one-score head"},
            tiebreak="average", estimator="mean over the window's epochs (GraNd over all weights: dd-grand)"),
    Measure("dd-el2n", "DDEL2N", "EL2N (Data Diet protocol)", DATA_DIET, ("eval_el2n", "loss"),
            "\u2016softmax - onehot\u2016 of the current model, in eval mode, on un-augmented examples",
            {"image": "EL2N as Data Diet scores it", "text": "mean over the chunk's tokens"}, tiebreak="average",
            protocol="scoring pass", estimator="one pass at the window's start (Data Diet also averages over "
                                                "independent runs: not done here)",
            refused=NO_SCORING_PASS),
    Measure("dd-grand", "DDGraNd", "GraNd (Data Diet protocol)", DATA_DIET, ("eval_grand", "loss"),
            "\u2016gradient of the example's loss w.r.t. every weight\u2016, eval mode, un-augmented",
            {"image": "GraNd as Data Diet scores it", "text": "of the chunk's mean token loss"}, tiebreak="average",
            protocol="scoring pass", estimator="one pass at the window's start (per-example gradients: the "
                                                "costliest measure; bench.py measures it)",
            refused=NO_SCORING_PASS),
)}

# ---- partitioning heuristics ---------------------------------------------------------------------

HEURISTICS = {h.name: h for h in (
    Heuristic("none", "Vanilla", "vanilla DPT", "none", PAPER, "a random slice per worker every epoch (no partition)",
              "the baseline", studies=False),
    Heuristic("stripes", "Stripes", "Stripes", "roundrobin", PAPER, "sorted position p to worker p mod n",
              "the paper's"),
    Heuristic("blocks", "Blocks", "Blocks", "steps", PAPER, "contiguous runs of the sorted list",
              "the paper's (nothing dropped)"),
    Heuristic("random", "Random", "random", "random", "this project (a control)",
              "a random partition per interval, seeded from (seed, interval)",
              "the control: fixed partitions without importance", frozenset({"interval", "seed"})),
    Heuristic("snake", "Snake", "snake", "snake", "the serpentine draft order, applied to Stripes",
              "Stripes in boustrophedon order",
              "spread of per-worker score sums never above Stripes' (nonnegative scores)"),
    Heuristic("balance", "Balance", "balance", "balance", "Graham's LPT rule (SIAM J. Appl. Math., 1969)",
              "greedy LPT of scores into equal-size partitions", "equal totals up to the largest score",
              frozenset({"scores"})),
    Heuristic("class-stripes", "ClassStripes", "class Stripes", "class-stripes", "this project (stratified Stripes)",
              "Stripes within each class", "per-class counts per worker differ by at most one",
              frozenset({"labels"})),
    Heuristic("blocks-rotate", "BlocksRotate", "rotating Blocks", "blocks-rotate", "this project",
              "Blocks, the block-to-worker map rotating each interval",
              "rank 0 (whose BatchNorm buffers DDP keeps) sees every block", frozenset({"interval"})),
    Heuristic("sticky-stripes", "StickyStripes", "sticky Stripes", "sticky-stripes", "this project",
              "Stripes' groups of n, each assigned to keep the most examples on their last worker",
              "moves no more examples than Stripes (a maximum matching per group)", frozenset({"previous"})),
    Heuristic("shard-stripes", "ShardStripes", "shard Stripes", "shard-stripes", "this project (the I/O study)",
              "whole storage shards ranked by mean importance, dealt round robin",
              "each shard on one worker; sizes within one shard", frozenset({"scores", "shard_size"})),
)}
ALIASES = {h.paper: h.name for h in HEURISTICS.values() if h.paper != h.name}  # roundrobin -> stripes, steps -> blocks

# ---- gradient reducers ---------------------------------------------------------------------------

EXDYNA = "Yoon & Oh, CCGrid 2024 (kljp/exdyna)"
REDUCERS = {r.name: r for r in (
    Reducer("none", "DDP's all-reduce", "PyTorch", "every entry, DDP's own bucketed all-reduce", studies=False),
    Reducer("exact", "dense, through the hook", "this project (the hook's reference)", "every entry, through the hook"),
    Reducer("exdyna", "ExDyna", EXDYNA, "threshold selection in a rotating block partition per worker, "
            "the partitions rebalanced and the threshold scaled online"),
    Reducer("micro", "MiCRO", "Yoon & Oh (ExDyna's code)", "ExDyna's rotating partitions without blocks or "
            "rebalancing"),
    Reducer("topk", "top-k", "Aji & Heafield 2017 (ExDyna's code)", "each worker's k largest, the union summed"),
    Reducer("global-topk", "global top-k", "this project (an oracle)",
            "the k largest of the summed gradient (a dense all-reduce first)"),
    Reducer("threshold", "hard threshold", "ExDyna's code", "every entry over a fixed threshold"),
    Reducer("cltk", "CLT-k", "Chen et al. 2020 (ExDyna's code)", "a leader, rotating every step, selects for all"),
    Reducer("gaussiank", "Gaussian-k", "Shi et al. 2019 (arXiv 1911.08772)",
            "a threshold from the mean and std of the gradient, refined a few times"),
)}
DEFAULT_DENSITY = 0.01


# ---- derived views -------------------------------------------------------------------------------

def task_of(dataset: str) -> Task:
    return TASKS[DATASETS[dataset].task]


def names_of(records: dict, task: str | None = None) -> list[str]:
    """The names of `records`, or those of one task (datasets, models)."""
    return [n for n, r in records.items() if task is None or getattr(r, "task", task) == task]


def means_nothing(measure: str, task: str) -> str | None:
    """Why `measure` is refused on `task`, or None when it has a meaning there."""
    record = MEASURES[measure]
    return None if task in record.meaning else (record.refused or f"it is not defined on {TASKS[task].title}")


def markdown_row(*values: str) -> str:
    return "| " + " | ".join(v.replace("|", "\\|") for v in values) + " |"


def table(kind: str) -> str:
    """The docs' markdown table of `kind` ("measures", "heuristics", "reducers", "datasets"), from the records."""
    if kind == "measures":
        rows = [markdown_row("measure", "score (higher: sorted first)", "protocol", "estimator", "channels",
                             "tie-break", *[f"on {t}" for t in TASKS], "coincides", "in the study", "source")]
        for m in MEASURES.values():
            rows.append(markdown_row(f"`{m.name}`", m.score, m.protocol, m.estimator, ", ".join(m.channels),
                                     m.tiebreak or "index", *[m.meaning.get(t, f"refused: {m.refused}") for t in TASKS],
                               m.coincides or "no", "yes" if m.studies else "no", m.source))
    elif kind == "heuristics":
        rows = [markdown_row("heuristic", "CSV name", "partition", "needs", "guarantee", "source")]
        for h in HEURISTICS.values():
            rows.append(markdown_row(f"`{h.name}`", h.paper, h.partition, ", ".join(sorted(h.needs)) or "the order",
                               h.guarantee, h.source))
    elif kind == "reducers":
        rows = [markdown_row("reducer", "name", "sends", "source")]
        rows += [markdown_row(f"`{r.name}`", r.title, r.exchange, r.source) for r in REDUCERS.values()]
    elif kind == "datasets":
        rows = [markdown_row("dataset", "task", "examples", "source")]
        for d in DATASETS.values():
            shape = "x".join(map(str, d.shape)) + f" uint8, {d.classes} classes" if d.shape else "byte chunks"
            rows.append(markdown_row(f"`{d.name}`", d.task, shape, d.source))
    else:
        raise KeyError(kind)
    header, *body = rows
    return "\n".join([header, "|" + "---|" * header.count(" | ") + "---|", *body])
