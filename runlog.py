"""The run's JSON log, declared: what a run writes beside its CSV row (results/<workload>/logs/<run>.json)
and report.py, plots.ipynb and gpucheck.py read. dpt.py fills one RunLog and writes it once, when the
run finishes (a checkpoint carries it as JSON); `RunLog.read` checks a file against this declaration:

    python -c "import runlog, sys; log = runlog.RunLog.read(sys.argv[1]); print(log.epochs[-1])" LOG.json

An epoch's record holds the fields every task writes, and `figures`, what its task adds (held-out
metric and speed: catalog.Task.epoch_key among them), written flat beside them so the file reads
as one table row per epoch.
"""
import dataclasses
import json
import types
import typing
from dataclasses import asdict, dataclass, field
from pathlib import Path


class LogError(ValueError):
    """A log that is not what RunLog declares."""


@dataclass
class Epoch:
    epoch: int  # 1-based
    phase: str  # "warmup", "interval K" or "vanilla"
    train_loss: float
    train_s: float
    tracking_s: float  # what importance tracking added to the epoch
    epoch_s: float
    figures: dict[str, float]  # the task's: its held-out metric (catalog.Task.epoch_key) and throughput
    exchange: dict[str, float] | None = None  # a gradient reducer's figures (reducers.ReducerState.take_stats)
    io: list[dict] | None = None  # each worker's streaming cache (streaming.WorkerReader.stats)

    def to_json(self) -> dict:
        plain = {k: v for k, v in asdict(self).items() if k != "figures" and v is not None}
        return plain | self.figures

    @staticmethod
    def from_json(raw: dict) -> "Epoch":
        own = {f.name for f in dataclasses.fields(Epoch)} - {"figures"}
        return _typed(Epoch, {k: v for k, v in raw.items() if k in own}
                      | {"figures": {k: v for k, v in raw.items() if k not in own}})


@dataclass
class Movement:
    """Per worker, how many examples left its partition and how many joined, at a repartition."""
    left: list[int]
    joined: list[int]
    moved: int


@dataclass
class Interval:
    start_epoch: int  # 1-based
    epochs: int
    heuristic_s: float  # merge, score, sort and partition
    partition_sizes: list[int]
    movement: Movement
    scoring_s: float | None = None  # a scoring pass (the Data Diet protocol's measures)


@dataclass
class RunLog:
    workload: dict  # workload.Workload's fields
    provenance: dict  # results.provenance(): commit, a dirty tree's diff hash, versions, host
    world_size: int
    workers: int
    examples: int
    device: str
    layout: str  # the model's memory layout on its device
    data: str  # where the training split came from
    test_data: str
    csv: str
    shard_size: int
    args: dict  # every resolved flag
    storage: dict | None = None  # a streaming run's: each shard file's bytes, a worker's cache, its policy
    epochs: list[Epoch] = field(default_factory=list)
    intervals: list[Interval] = field(default_factory=list)
    resumed_at_epoch: list[int] = field(default_factory=list)
    resume_provenance: list[dict] = field(default_factory=list)
    best: dict[str, float] = field(default_factory=dict)  # {catalog.Task.column: value, "best_epoch": its epoch}
    total_training_s: float | None = None
    tracking_s_per_epoch: float | None = None

    def to_json(self) -> dict:
        plain = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                 if f.name not in ("epochs", "intervals", "best")}
        intervals = [{k: v for k, v in asdict(i).items() if v is not None} for i in self.intervals]
        return plain | {"epochs": [e.to_json() for e in self.epochs], "intervals": intervals} | self.best

    @staticmethod
    def from_json(raw: dict) -> "RunLog":
        own = {f.name for f in dataclasses.fields(RunLog)}
        extra = {k: v for k, v in raw.items() if k not in own}
        if any(not k.startswith("best_") for k in extra):
            raise LogError(f"RunLog: unknown fields {sorted(k for k in extra if not k.startswith('best_'))}")
        fields = {k: v for k, v in raw.items() if k in own} | {"best": extra}
        fields["epochs"] = [Epoch.from_json(e) for e in raw.get("epochs", [])]
        return _typed(RunLog, fields)

    @staticmethod
    def read(path: str | Path) -> "RunLog":
        return RunLog.from_json(json.loads(Path(path).read_text()))


def _check(value, kind, where: str):
    """`value` as the annotation `kind` declares it, or LogError naming `where`."""
    origin, parts = typing.get_origin(kind), typing.get_args(kind)
    if origin in (typing.Union, types.UnionType):
        for part in parts:
            try:
                return _check(value, part, where)
            except LogError:
                pass
        raise LogError(f"{where}: {value!r} is not {kind}")
    if kind is type(None):
        if value is not None:
            raise LogError(f"{where}: {value!r} is not None")
        return value
    if dataclasses.is_dataclass(kind):
        return value if isinstance(value, kind) else _typed(kind, value, where)
    if origin is list:
        if not isinstance(value, list):
            raise LogError(f"{where}: {value!r} is not a list")
        return [_check(v, parts[0], f"{where}[{i}]") for i, v in enumerate(value)] if parts else value
    if origin is dict or kind is dict:
        if not isinstance(value, dict):
            raise LogError(f"{where}: {value!r} is not a mapping")
        return {k: _check(v, parts[1], f"{where}.{k}") for k, v in value.items()} if parts else value
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return value  # JSON's 3 for 3.0: kept as written
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise LogError(f"{where}: {value!r} is not {kind.__name__}")
    return value


def _typed(cls, raw: dict, where: str = ""):
    """An instance of dataclass `cls` from `raw`, every field checked against its annotation."""
    if not isinstance(raw, dict):
        raise LogError(f"{where or cls.__name__}: {raw!r} is not a mapping")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(raw) - names
    if unknown:
        raise LogError(f"{where or cls.__name__}: unknown fields {sorted(unknown)}")
    required = {f.name for f in dataclasses.fields(cls)
                if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING}
    if required - set(raw):
        raise LogError(f"{where or cls.__name__}: missing {sorted(required - set(raw))}")
    return cls(**{k: _check(v, hints[k], f"{where or cls.__name__}.{k}") for k, v in raw.items()})
