"""Importance-aware DPT in your own training loop: dpt.py's schedule, recorder, measures, heuristics and
samplers (the same code) behind three lines. In a torchrun script (one rank per worker) or a plain one:

    plan = ImportanceAware(train_set, epochs=30, warmup=10, interval=5, measure="variance", heuristic="stripes")
    loader = DataLoader(plan.dataset, batch_size=256, sampler=plan.sampler)        # yields (index, example)
    for epoch in range(30):
        plan.sampler.set_epoch(epoch)        # at each interval's start: merge, score, repartition
        for index, (x, y) in loader:
            loss = plan.update(F.cross_entropy(model(x), y, reduction="none"), index)   # records; the mean
            loss.backward(); ...

examples/ddp_fashionmnist.py is a whole script (torchrun --nproc_per_node 2 examples/ddp_fashionmnist.py).
Vanilla DPT for `warmup` epochs (a DistributedSampler slice per rank, reshuffled every epoch), then
intervals of `interval` epochs on fixed partitions chosen by `heuristic` from `measure` over the
window before (the warmup minus its first `ignore` epochs, then the previous interval), as dpt.py.
Under torch.distributed each rank records the examples it trains on, and one all_reduce merges them
at each repartition, so every rank derives the same partition.
"""
from collections.abc import Iterator, Sized

import torch
import torch.distributed as dist
from torch.utils.data import Dataset, Sampler

from . import catalog as C
from . import heuristics, importance, samplers, schedule


class PlanError(ValueError):
    """A plan, or an input to it, that cannot work; the message names the fix."""


class Indexed(Dataset):
    """`dataset` with each item's key: (key, dataset[key % N]). A key is the example's index, or index + N
    for a padding copy (what evens the ranks' step counts), so that a copy is trained on but never
    recorded twice."""

    def __init__(self, dataset: Sized):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: int):
        return key, self.dataset[key % len(self.dataset)]


class WindowSampler(Sampler):
    """This rank's sampler; set_epoch(epoch) moves it through the plan's windows (repartitioning at each
    interval's start, a collective when distributed: call it on every rank, every epoch, in order)."""

    def __init__(self, plan: "ImportanceAware"):
        self.plan = plan

    def set_epoch(self, epoch: int) -> None:
        """ImportanceAware.set_epoch: the sampler of `epoch`, repartitioning at an interval's start."""
        self.plan.set_epoch(epoch)

    def __iter__(self) -> Iterator[int]:
        return iter(samplers.keys(self.plan.current).tolist())  # padding copies as index + N: not recorded again

    def __len__(self) -> int:
        return len(self.plan.current)


class ImportanceAware:
    """The plan of one training run. `epochs`: T, the run's epochs (the last interval also runs the
    (T - W) mod I leftover epochs, as the paper's code); `warmup`, `interval`, `ignore`: E_warmup,
    E_interval, E_ignore; `measure`, `heuristic`: names of docs/measures.md's tables ("none": vanilla
    DPT throughout); `seed` shuffles the fixed partitions (and seeds the random control), `sampler_seed`
    warmup's DistributedSampler; `batch_size` (per rank) pads a partition that would end in a batch of
    one; `labels` (N,) for the heuristics that read each example's class; `shard_size` for shard-stripes.
    """

    def __init__(self, dataset: Sized, epochs: int, warmup: int = 20, interval: int = 5, measure: str = "variance",
                 heuristic: str = "stripes", ignore: int = 5, seed: int = 0, sampler_seed: int = 0,
                 shuffle: bool = True, batch_size: int | None = None, labels: torch.Tensor | None = None,
                 shard_size: int | None = None):
        heuristic = C.ALIASES.get(heuristic, heuristic)
        self.num_examples = len(dataset)
        self.rank, self.world = (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)
        check(self.num_examples, self.world, epochs, warmup, interval, ignore, measure, heuristic, labels)
        warmup = epochs if heuristic == "none" else warmup
        self.windows = schedule.windows(epochs, warmup, interval if warmup < epochs else 1)
        self.policy = schedule.Policy(measure, heuristic, ignore, seed, sampler_seed, shuffle, batch_size)
        self.channels = importance.channels(measure) if heuristic != "none" else ("loss",)
        self.labels = None if labels is None else labels.to("cpu", torch.int64)
        self.shard_size = shard_size or min(100, self.num_examples // self.world)
        why = heuristics.refusal(heuristic, self.num_examples, self.world, self.shard_size)
        if why:
            raise PlanError(why)
        self.dataset, self.sampler = Indexed(dataset), WindowSampler(self)
        self.window, self.epoch, self.partition, self.history = self.windows[0], -1, None, None
        self.recorder: importance.Recorder | None = None
        self.restored: dict[str, torch.Tensor] | None = None  # a checkpoint's records, until the next update()
        self.current = self._samplers()

    # ---- the windows ----
    def _samplers(self):
        indices = range(self.num_examples)
        return schedule.worker_samplers(indices, self.partition, range(self.rank, self.rank + 1), self.world,
                                        self.policy)[0]

    def set_epoch(self, epoch: int) -> None:
        """Enter `epoch` (0-based): at an interval's start, its partition from the window before."""
        if epoch < self.epoch or epoch > self.epoch + 1 or epoch >= self.windows[-1].end:
            raise PlanError(f"set_epoch({epoch}) after epoch {self.epoch}: call it for every epoch of the plan's "
                            f"{self.windows[-1].end}, in order (a resumed run: load_state_dict first)")
        if epoch != self.epoch:
            window = next(w for w in self.windows if w.first_epoch <= epoch < w.end)
            if window.index > 0 and window != self.window:
                self._repartition(window)
            self.window, self.epoch = window, epoch
        self.current.set_epoch(epoch)

    def _repartition(self, window: schedule.Window) -> None:
        if self.recorder is None and self.restored is not None:  # resumed at a window's end: score on the CPU
            self._open_recorder(torch.device("cpu"))
        if self.recorder is None:
            raise PlanError(f"nothing was recorded in the window before epoch {window.first_epoch}: pass every "
                            "batch's per-example losses to update()")
        before = None
        if "previous" in C.HEURISTICS[self.policy.heuristic].needs:
            before = schedule.assignment(range(self.num_examples), self.partition, self.world, self.policy,
                                         window.first_epoch - 1)
        new = schedule.repartition(self.recorder, window, self.history, self.policy, self.world, self.labels,
                                   before, self.shard_size)
        self.partition, self.history, self.recorder = new.partition, new.history, None
        self.current = self._samplers()

    # ---- recording ----
    def update(self, loss: torch.Tensor, index: torch.Tensor, logits: torch.Tensor | None = None,
               targets: torch.Tensor | None = None) -> torch.Tensor:
        """Record this batch's per-example `loss` (reduction='none') for the examples `index` (the keys the
        loader gave), and return its mean, to backpropagate. A measure that reads more than the loss
        (forgetting's correctness, EL2N) also needs the batch's `logits` and `targets`."""
        if loss.dim() != 1:
            raise PlanError(f"update() takes one loss per example, shape (B,), not {tuple(loss.shape)}: compute it "
                            "with reduction='none'")
        if not isinstance(index, torch.Tensor) or index.dtype not in (torch.int64, torch.int32) or \
                index.shape != loss.shape:
            raise PlanError(f"update() takes the batch's index as an integer tensor of the loss's shape "
                            f"{tuple(loss.shape)} (the keys plan.dataset yields), not "
                            f"{getattr(index, 'dtype', type(index).__name__)} {tuple(getattr(index, 'shape', ()))}")
        # checked where the loader left it, on the CPU: a check on the device would wait for it every step
        if index.device.type == "cpu" and len(index) and (int(index.min()) < 0 or
                                                          int(index.max()) >= 2 * self.num_examples):
            raise PlanError(f"update(): index outside 0..{2 * self.num_examples - 1}: pass the keys plan.dataset "
                            "yields (index, or index + N for a padding copy)")
        keys = index.to(loss.device, torch.int64)
        if self.epoch < 0:
            raise PlanError("update() before the first epoch: call plan.sampler.set_epoch(epoch) first")
        if set(self.channels) - {"loss"} and (logits is None or targets is None):
            raise PlanError(f"measure {self.policy.measure} reads {', '.join(c for c in self.channels if c != 'loss')},"
                            " which update() computes from the batch's logits and targets: pass them")
        if self.recorder is None:
            self._open_recorder(loss.device)
        found = {"loss": loss} if self.channels == ("loss",) else importance.signals(logits, targets, self.channels,
                                                                                    loss=loss)
        self.recorder.record(keys, self.epoch - self.window.first_epoch, found)
        return loss.mean()

    def _open_recorder(self, device: torch.device) -> None:
        """The window's recorder on `device`, the losses' (a resumed window: with its saved records, and the
        run's statistics moved there from the CPU)."""
        self.recorder = importance.Recorder(self.num_examples, self.window.epochs, self.channels, device)
        if self.restored is not None:
            self.recorder.restore(self.restored)
            self.restored = None
        if self.history is not None:
            self.history = {k: v.to(device) for k, v in self.history.items()}

    # ---- checkpoints ----
    def state_dict(self) -> dict:
        """The plan's state after the epoch it is in (a collective when distributed: every rank calls it):
        the window's records merged across ranks (on the CPU), the partition and the run's statistics."""
        columns = self.epoch + 1 - self.window.first_epoch
        recorded = self.recorder.merged(columns) if self.recorder is not None else self.restored
        return {"epoch": self.epoch, "window": self.window.index, "partition": self.partition,
                "history": on_cpu(self.history), "recorded": on_cpu(recorded), "policy": vars(self.policy),
                "world": self.world, "examples": self.num_examples, "windows": [vars(w) for w in self.windows]}

    def load_state_dict(self, state: dict) -> None:
        """Continue after the saved epoch (every rank calls it; rank 0 keeps the merged records, so the
        next merge sums to the same matrix): the next set_epoch is the saved epoch + 1."""
        mine = {"policy": vars(self.policy), "world": self.world, "examples": self.num_examples,
                "windows": [vars(w) for w in self.windows]}
        missing = [k for k in (*mine, "epoch", "window", "partition", "history", "recorded") if k not in state]
        if missing:
            raise PlanError(f"not a plan's state_dict (no {', '.join(missing)}): pass what plan.state_dict() returned")
        differ = [k for k in mine if state[k] != mine[k]]
        if differ:
            raise PlanError(f"this state belongs to another plan ({', '.join(differ)} differ): build the plan as "
                            "the saved run did")
        self.epoch, self.window = state["epoch"], self.windows[state["window"]]
        self.partition, self.recorder = state["partition"], None
        self.history = on_cpu(state["history"])
        self.current = self._samplers()
        # the records wait for the first update(), which knows the device the losses are on; rank 0 alone
        # restores them (the others none of their columns), so the next merge sums to the saved matrix
        self.restored = on_cpu(state["recorded"])
        if self.rank != 0 and self.restored is not None:
            self.restored = {c: v[:, :0] for c, v in self.restored.items()}


def on_cpu(tensors: dict[str, torch.Tensor] | None) -> dict[str, torch.Tensor] | None:
    """A state's tensors on the CPU: a checkpoint loads on any machine, whatever device saved it."""
    return None if tensors is None else {k: v.cpu() for k, v in tensors.items()}


def check(num_examples: int, world: int, epochs: int, warmup: int, interval: int, ignore: int, measure: str,
          heuristic: str, labels: torch.Tensor | None) -> None:
    """What the plan refuses up front, each in one line naming the fix."""
    if heuristic not in C.HEURISTICS:
        raise PlanError(f"heuristic {heuristic!r} is not one of {', '.join(C.HEURISTICS)}")
    if measure not in C.MEASURES:
        raise PlanError(f"measure {measure!r} is not one of {', '.join(C.MEASURES)}")
    record = C.MEASURES[measure]
    if heuristic != "none" and record.protocol == "scoring pass":
        raise PlanError(f"measure {measure} scores every example in a pass of its own, which the plug-in cannot run "
                        "in your loop; pick a measure of the training pass (docs/measures.md)")
    if heuristic != "none" and "grad_norm" in importance.channels(measure):
        raise PlanError(f"measure {measure} reads the last layer's input, which update() does not see; pick another")
    if "labels" in C.HEURISTICS[heuristic].needs and (labels is None or labels.shape != (num_examples,)):
        raise PlanError(f"heuristic {heuristic} reads each example's class: pass labels= as ({num_examples},) "
                        f"integers, not {None if labels is None else tuple(labels.shape)}")
    if labels is not None and labels.is_floating_point():
        raise PlanError("labels= must be integer classes, not floating point")
    if epochs < 1:
        raise PlanError(f"epochs must be at least 1, not {epochs}")
    if num_examples < world:
        raise PlanError(f"{num_examples} examples cannot be split across {world} ranks")
    if heuristic != "none" and not (0 <= ignore < warmup < epochs and 1 <= interval <= epochs - warmup):
        raise PlanError(f"the schedule needs 0 <= ignore < warmup < epochs and 1 <= interval <= epochs - warmup "
                        f"(got ignore {ignore}, warmup {warmup}, interval {interval}, epochs {epochs})")
