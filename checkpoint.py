"""The state a run carries from epoch to epoch (Run), and its checkpoint: saved every --checkpoint-every
epochs, checked against the flags on --resume, restored to continue to the same result row.

    python -c "import checkpoint; print(sorted(checkpoint.KEYS))"
    python -c "import checkpoint; s = checkpoint.read(PATH); print(s['epoch'], s['data'])"   # a saved one

A checkpoint holds the model, the optimizer, every rank's random generators and reducer state, the
current window's signals merged across processes, the partition, the metrics and the log, the run's
per-example statistics (forgetting's whole-run counts), and the identity of the data it was trained
on (a hash of the example tensors, checked on resume). The samplers need no state: their order is a
function of seed and epoch. The file is a header line holding the SHA-256 of what follows
(torch.save's bytes), checked before anything is loaded, and it is written through a temporary file
and a rename (results.write_bytes).
"""
import hashlib
import io
from argparse import Namespace
from dataclasses import dataclass, field
from pathlib import Path

import torch

import flags
import heuristics
import importance
import results
import topology
from runlog import LogError, RunLog
from topology import Topology
from train import Trainer


class CheckpointError(ValueError):
    """A checkpoint that cannot be resumed from; the message names the fix."""


class Unwritable(OSError):
    """A checkpoint that could not be written (a full disk): the run stops, its last good one kept."""


@dataclass
class Run:
    """The state a run carries from epoch to epoch, and what a checkpoint saves of it."""
    window: int = 0  # the window (0: warmup) the next epoch belongs to, or the one just finished
    epoch: int = 0  # epochs trained so far
    partition: heuristics.Partition | None = None
    recorder: importance.Recorder | None = None
    history: dict | None = None  # the run's per-example statistics before the current window (importance.advance)
    metrics: list = field(default_factory=list)  # the row's per-epoch metric
    log: RunLog | None = None
    log_name: str = ""
    partitions: list = field(default_factory=list)  # --save-partitions: one entry per window
    elapsed_s: float = 0.0

    def state(self, recorded: dict[str, torch.Tensor]) -> dict:
        """Everything but the recorder, which is saved as its merged columns `recorded`."""
        out = {k: getattr(self, k) for k in Run.__dataclass_fields__ if k != "recorder"}
        out["history"] = self.history and {c: v.cpu() for c, v in self.history.items()}
        out["log"] = self.log.to_json()  # plain values: a checkpoint loads with weights_only
        return out | {"recorded": {c: v.cpu() for c, v in recorded.items()}}

    @staticmethod
    def from_state(state: dict, recorder: importance.Recorder, device: torch.device) -> "Run":
        fields = {k: state[k] for k in Run.__dataclass_fields__ if k not in ("recorder", "history", "log")}
        history = state["history"] and {c: v.to(device) for c, v in state["history"].items()}
        return Run(**fields, recorder=recorder, history=history, log=RunLog.from_json(state["log"]))


KEYS = set(Run.__dataclass_fields__) - {"recorder"} | {"args", "num_workers", "launch", "model", "optimizer", "rng",
                                                        "recorded", "exchange", "provenance", "data"}
MAGIC = b"dpt.py checkpoint sha256="


def write(path: Path, state: dict) -> None:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    payload = buffer.getvalue()
    results.write_bytes(path, MAGIC + hashlib.sha256(payload).hexdigest().encode() + b"\n" + payload)


def read(path: Path) -> dict:
    """A checkpoint's state, its checksum checked first; CheckpointError for a damaged or foreign file."""
    raw = Path(path).read_bytes()
    head, _, payload = raw.partition(b"\n")
    if not head.startswith(MAGIC):
        raise CheckpointError(f"{path} is not a checkpoint of dpt.py (no checksum line); delete it to start the run "
                              "afresh")
    if hashlib.sha256(payload).hexdigest().encode() != head.removeprefix(MAGIC):
        raise CheckpointError(f"corrupt checkpoint {path} (its bytes do not match their checksum); delete it to start "
                              "the run afresh")
    try:
        state = torch.load(io.BytesIO(payload), map_location="cpu", weights_only=True)
    except Exception as err:
        raise CheckpointError(f"corrupt checkpoint {path} ({type(err).__name__}); delete it to start the run "
                              "afresh") from None
    if not isinstance(state, dict) or not KEYS <= state.keys():
        missing = sorted(KEYS - set(state)) if isinstance(state, dict) else "everything"
        raise CheckpointError(f"{path} is not a checkpoint of this dpt.py (missing {missing}); delete it to start "
                              "the run afresh")
    try:
        RunLog.from_json(state["log"])
    except LogError as err:
        raise CheckpointError(f"{path} was written by another version of dpt.py (its log: {err}); resume with that "
                              "version, or delete it to start the run afresh") from None
    return state


def rng_states() -> tuple:
    """This process's random generators: the CPU's, and its GPU's (dropout masks are drawn there)."""
    return torch.get_rng_state(), torch.cuda.get_rng_state() if torch.cuda.is_available() else None


def save(path: Path, run: Run, window_start: int, trainer: Trainer, args: Namespace, top: Topology,
         data: dict) -> None:
    """Every process takes part (the recorder's merge and the reducers' states are collectives); rank 0 writes."""
    recorded = run.recorder.merged(run.epoch - window_start)
    # one per rank: the reducers' residuals, the random generators and what each recorded differ
    exchanges = topology.gather_to_first(trainer.exchange.state_dict()) if trainer.exchange else None
    rngs = topology.gather_to_first(rng_states())
    if top.master:
        try:
            write(path, {**run.state(recorded), "args": vars(args), "num_workers": top.workers,
                         "launch": "torchrun" if top.launched else "emulated", "model": trainer.model.state_dict(),
                         "optimizer": trainer.optimizer.state_dict(), "rng": rngs, "exchange": exchanges,
                         "provenance": run.log.provenance, "data": data})
        except OSError as err:
            raise Unwritable(f"the checkpoint after epoch {run.epoch} could not be written ({err})") from None
    topology.barrier()  # the others wait for the file: a rank failing right after must not take it with it


def kept(path: Path) -> str:
    """What a stopped run keeps of checkpoint `path`, and how to go on (its last line)."""
    if not path.is_file():
        return "no checkpoint was saved (pass --checkpoint-every K to keep one every K epochs); a rerun starts afresh"
    try:
        saved = read(path)["epoch"]
    except (OSError, CheckpointError):  # a damaged file: say so rather than fail while stopping
        saved = "?"
    return f"its checkpoint after epoch {saved} is {path}; rerun with --resume to go on"


def load(path: Path, args: Namespace, top: Topology, data: dict) -> dict | None:
    """This run's checkpoint for --resume, checked against the flags and the data (`data`: the
    splits' identity, as preflight found them); None if there is none."""
    results.clean_temporaries(path)
    if path.is_dir():
        raise CheckpointError(f"the checkpoint path {path} is a folder; move it away")
    if not path.is_file():
        return None
    state = read(path)
    same = ("sha256", "examples")
    other = [split for split in data if {k: state["data"].get(split, {}).get(k) for k in same} !=
             {k: data[split][k] for k in same}]
    if other:
        there, here = state["data"].get(other[0], {}).get("source"), data[other[0]]["source"]
        raise CheckpointError(f"checkpoint {path} was trained on other data (the {' and '.join(other)} split: {there} "
                              f"there, {here} here, their examples differ); pass the same --data-dir (or --text-file), "
                              "or drop --resume")
    changed = [f"--{k.replace('_', '-')} {state['args'].get(k)} -> {getattr(args, k)}" for k in flags.run_defining()
               if state["args"].get(k) != getattr(args, k)]
    if state["num_workers"] != top.workers:
        changed.append(f"workers {state['num_workers']} -> {top.workers} (processes x --emulate-workers)")
    launch = "torchrun" if top.launched else "emulated"
    if args.reducer != "none" and state["launch"] != launch:
        changed.append(f"the reducer's exchange {state['launch']} -> {launch} (its state is per DDP bucket and "
                       f"rank, or one bucket for every emulated worker)")
    if changed:
        raise CheckpointError(f"checkpoint {path} belongs to another run ({'; '.join(changed)}); drop --resume or "
                              "restore those flags")
    return state


def restore(state: dict, trainer: Trainer, top: Topology, num_examples: int, window_length: int,
            provenance: dict) -> Run:
    """The run where its checkpoint left it, the current window's signals so far included (merged
    values: rank 0 restores them, the others start empty, so the next merge sums to the same), and
    this rank's reducer state (residuals, thresholds, blocks). The number of processes may have
    changed (same workers, other hosts): its random generators then keep their fresh per-rank seeds."""
    trainer.model.load_state_dict(state["model"])
    trainer.optimizer.load_state_dict(state["optimizer"])
    if len(state["rng"]) == top.world:
        cpu, cuda = state["rng"][top.rank]
        torch.set_rng_state(cpu)
        if cuda is not None and top.device.type == "cuda":
            torch.cuda.set_rng_state(cuda, top.device)
    if trainer.exchange:  # a reducer run resumes on the same processes (load)
        trainer.exchange.load_state_dict(state["exchange"][top.rank], top.device, rebuilding=top.launched)
    recorder = importance.Recorder(num_examples, window_length, tuple(state["recorded"]), top.device)
    if top.master:
        recorder.restore(state["recorded"])
    run = Run.from_state(state, recorder, top.device)
    run.log.resumed_at_epoch.append(run.epoch + 1)
    run.log.resume_provenance.append(provenance)  # the code may have changed since
    return run
