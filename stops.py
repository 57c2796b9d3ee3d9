"""How a run stops before its end: signals become a checkpoint at the next epoch's end, or a stop now,
and either way one line saying what is kept and how to go on. dpt.py installs it for its loop:

    python dpt.py --dataset fashionmnist --subset 2000 --total-epochs 50   # then Ctrl-C: a checkpoint, one line

- Ctrl-C (SIGINT) once, or SIGUSR1 (what Slurm's --signal sends before a time limit): finish the
  epoch, save a checkpoint, stop; exit status 75 (EX_TEMPFAIL: rerun with --resume to go on).
- Ctrl-C twice, or SIGTERM (torchrun stopping its ranks, scancel, a preemption): stop now, keeping
  the last checkpoint; exit status 128 + the signal.
Under torchrun every rank stops at the same epoch: the ranks agree on it with one small all_reduce
per epoch. A process started by torchrun or by run-experiments.sh also gets SIGTERM when that parent
dies (PR_SET_PDEATHSIG), so a killed launcher never leaves its runs training unsupervised.
"""
import ctypes
import signal

TEMPFAIL = 75  # sysexits.h EX_TEMPFAIL: stopped with a checkpoint, resumable


class Stopped(Exception):
    """A stop now (a second Ctrl-C, SIGTERM): the signal's number."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


class Stops:
    """The run's signal handlers while it trains, and whether a stop at the epoch's end was asked for."""

    def __init__(self):
        self.asked: str | None = None  # the signal that asked for a stop at the epoch's end
        self.previous = {}

    def __enter__(self) -> "Stops":
        for signum, handler in ((signal.SIGINT, self._interrupt), (signal.SIGUSR1, self._later),
                                (signal.SIGTERM, self._now)):
            self.previous[signum] = signal.signal(signum, handler)
        return self

    def __exit__(self, *exc) -> None:
        for signum, handler in self.previous.items():
            signal.signal(signum, handler)

    def _interrupt(self, signum, frame) -> None:
        if self.asked:
            raise Stopped(signum)
        self.asked = "SIGINT"
        print("\nstopping after this epoch, with a checkpoint (Ctrl-C again to stop now)", flush=True)

    def _later(self, signum, frame) -> None:
        self.asked = signal.Signals(signum).name

    def _now(self, signum, frame) -> None:
        raise Stopped(signum)

    def agreed(self, device) -> bool:
        """Whether any process was asked to stop at this epoch's end (every rank gets the same answer)."""
        import torch  # here: die_with_parent runs before torch is imported
        import torch.distributed as dist

        flag = torch.tensor([float(self.asked is not None)], device=device)
        if dist.is_initialized():
            dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        return bool(flag.item())


def die_with_parent() -> None:
    """SIGTERM to this process when its parent dies (Linux; elsewhere nothing). For processes that a
    launcher started: a launcher killed with SIGKILL cannot stop them itself. dpt.py calls it first
    thing, before its imports, so a launcher killed while the ranks import torch counts too."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGTERM), 0, 0, 0)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass
