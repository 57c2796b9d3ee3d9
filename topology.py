"""Which process this is and which workers it hosts, computed once from torchrun's environment and the
flags (rank, world size, local rank, device, backend, workers in all, the workers this process
emulates), and the collectives the loop needs beyond DDP's own:

    python -c "import flags, topology; print(topology.of(flags.parse_args(['--emulate-workers', '4']), {}))"

A process started by torchrun has RANK, WORLD_SIZE, LOCAL_RANK and TORCHELASTIC_RUN_ID; a plain
`python dpt.py` has none of them and is world size 1. Anything in between (a stale RANK in the shell,
WORLD_SIZE without RANK) is refused, since it would train a slice of the data and write a bogus row.
"""
import datetime
import os
from argparse import Namespace
from collections.abc import Mapping
from dataclasses import dataclass

import torch
import torch.distributed as dist

TORCHRUN = ("RANK", "WORLD_SIZE", "LOCAL_RANK")


class LaunchError(ValueError):
    """An environment no launch can have made; the message names the fix."""


@dataclass(frozen=True)
class Topology:
    rank: int
    world: int
    local_rank: int
    launched: bool  # by torchrun: a process group, DDP, one collective per merge
    emulated: int  # workers this process hosts (--emulate-workers)
    device: torch.device
    backend: str  # of the process group (when launched)

    @property
    def workers(self) -> int:
        """n: the number of workers, processes x emulated workers each."""
        return self.world * self.emulated

    @property
    def mine(self) -> range:
        """The workers this process hosts, numbered by rank."""
        return range(self.rank * self.emulated, (self.rank + 1) * self.emulated)

    @property
    def master(self) -> bool:
        """Rank 0 evaluates, prints and writes results."""
        return self.rank == 0


def environment(environ: Mapping[str, str]) -> tuple[bool, int, int, int]:
    """(launched by torchrun, rank, world size, local rank) from the environment; LaunchError when it is
    incomplete or inconsistent."""
    present = [v for v in TORCHRUN if v in environ]
    if not present:
        return False, 0, 1, 0
    if len(present) < len(TORCHRUN) or "TORCHELASTIC_RUN_ID" not in environ:
        shown = ", ".join(f"{v}={environ[v]}" for v in present)
        missing = [v for v in (*TORCHRUN, "TORCHELASTIC_RUN_ID") if v not in environ]
        raise LaunchError(f"{shown} is set but {', '.join(missing)} is not: this process was not started by torchrun; "
                          f"unset {' '.join(present)} for a single process, or launch with torchrun")
    try:
        rank, world, local = (int(environ[v]) for v in TORCHRUN)
        local_world = int(environ.get("LOCAL_WORLD_SIZE", world))
    except ValueError:
        raise LaunchError(f"torchrun's {', '.join(f'{v}={environ[v]}' for v in TORCHRUN)} are not integers; "
                          "launch with torchrun") from None
    if not (world >= 1 and 0 <= rank < world and 0 <= local < local_world <= world):
        raise LaunchError(f"RANK={rank}, WORLD_SIZE={world}, LOCAL_RANK={local} (LOCAL_WORLD_SIZE={local_world}) "
                          "do not fit together; launch with torchrun")
    return True, rank, world, local


def of(args: Namespace, environ: Mapping[str, str] | None = None, world: int | None = None) -> Topology:
    """The run's topology from the environment (os.environ by default) and the flags; `world`: plan for a
    launch of that many processes instead (dpt.py --preflight)."""
    launched, rank, size, local = environment(os.environ if environ is None else environ)
    if world is not None:
        launched, rank, size, local = True, 0, world, 0
    cuda = torch.cuda.is_available()
    device = torch.device(f"cuda:{local}" if cuda else "cpu")
    backend = args.backend or ("nccl" if cuda else "gloo")
    if backend == "nccl" and not cuda:
        raise LaunchError("--backend nccl needs CUDA GPUs; use --backend gloo on CPUs")
    return Topology(rank, size, local, launched, args.emulate_workers, device, backend)


def start(top: Topology, timeout: float) -> None:
    """The process group (when launched), and this rank's device as the current one (CUDA events,
    streams and the recorder all follow it)."""
    if top.device.type == "cuda":
        torch.cuda.set_device(top.device)
    if top.launched:
        dist.init_process_group(backend=top.backend, timeout=datetime.timedelta(seconds=timeout))


def stop() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def gather_to_first(value) -> list | None:
    """Every process's `value`, in rank order, on rank 0 (None elsewhere)."""
    if not dist.is_initialized():
        return [value]
    out = [None] * dist.get_world_size() if dist.get_rank() == 0 else None
    dist.gather_object(value, out, dst=0)
    return out


def gather_objects(value) -> list:
    """Every process's `value`, in rank order, on every process."""
    if not dist.is_initialized():
        return [value]
    out = [None] * dist.get_world_size()
    dist.all_gather_object(out, value)
    return out


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()
