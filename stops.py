"""How a run stops before its end: signals become a checkpoint at the next epoch's end, or a stop now,
and either way one line saying what is kept and how to go on. dpt.py installs it for its loop:

    python dpt.py --dataset fashionmnist --subset 2000 --total-epochs 50   # then Ctrl-C: a checkpoint, one line

- Ctrl-C (SIGINT) once, or SIGUSR1 (what Slurm's --signal sends before a time limit): finish the
  epoch, save a checkpoint, stop; exit status 75 (EX_TEMPFAIL: rerun with --resume to go on).
- Ctrl-C twice, SIGTERM (torchrun stopping its ranks, scancel, a preemption) or SIGHUP (a closed
  terminal): stop now, keeping the last checkpoint; exit status 128 + the signal.
- Any of them during start-up (imports, checks, before the first epoch): stop now, nothing trained;
  SIGUSR1 exits 75, the others 128 + the signal.
- Any of them while the finished run writes its log and row: held until both are whole, then the run
  ends as finished (exit status 0), saying which signal came.
Under torchrun every rank stops at the same epoch: the ranks agree on it with one small all_reduce
per epoch. A process started by torchrun or by run-experiments.sh also gets SIGTERM when that parent
dies (PR_SET_PDEATHSIG), so a killed launcher never leaves its runs training unsupervised.
"""
import ctypes
import os
import signal
import sys

TEMPFAIL = 75  # sysexits.h EX_TEMPFAIL: stopped with a checkpoint, resumable


class Stopped(BaseException):  # not an Exception: no `except Exception` may turn a stop into another error
    """A stop now (a second Ctrl-C, SIGTERM): the signal's number."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGUSR1)
LATER = (signal.SIGUSR1,)  # in training: a checkpoint at the epoch's end, then stop (SIGINT: the first one)


def status(signum: int) -> int:
    """The exit status of a run stopped by `signum` before its end."""
    return TEMPFAIL if signum in LATER else 128 + signum


def at_import(prog: str) -> None:
    """While the script imports (seconds, before Stops can be installed): any stop signal ends it at
    once with one line; nothing is written yet."""
    def handler(signum, frame):
        sys.stderr.write(f"{prog}: error: stopped by {signal.Signals(signum).name} while starting; nothing was "
                         "written\n")
        os._exit(status(signum))
    for signum in SIGNALS:
        signal.signal(signum, handler)


class Stops:
    """The run's signal handlers from its start to its end, in three phases: start-up (stop now:
    Stopped), training (a stop at the epoch's end is asked for, or Stopped now), and finishing (held:
    the results are written whole first). `asked`: the signal that asked for a stop at the epoch's end."""

    def __init__(self):
        self.asked: str | None = None
        self.phase = "start-up"
        self.held: str | None = None  # a signal that came while finishing
        self.previous = {}

    def __enter__(self) -> "Stops":
        for signum in SIGNALS:
            self.previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for signum, handler in self.previous.items():
            signal.signal(signum, handler)

    def _handle(self, signum, frame) -> None:
        name = signal.Signals(signum).name
        if self.phase == "finishing":
            self.held = self.held or name
        elif self.phase == "start-up" or self.asked and signum == signal.SIGINT:
            raise Stopped(signum)
        elif signum == signal.SIGINT:
            self.asked = name
            print("\nstopping after this epoch, with a checkpoint (Ctrl-C again to stop now)", flush=True)
        elif signum in LATER:
            self.asked = name
        else:
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
