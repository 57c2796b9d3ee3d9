"""Importance-aware data-parallel training (Sheikholeslami et al., DAIS 2023): the training script.

    python dpt.py --dataset fashionmnist --subset 2000 --total-epochs 6 --warmup-epochs 3 \
        --interval-epochs 1 --ignore-epochs 1
    torchrun --nproc_per_node=4 dpt.py --dataset cifar10 --model resnet18 --heuristic stripes --measure variance \
        --warmup-epochs 20 --interval-epochs 5 --ignore-epochs 5 --total-epochs 100 --seed 17611

Vanilla DPT for E_warmup epochs (a DistributedSampler per worker) while every example's training
signals are recorded; then intervals of E_interval epochs on fixed partitions (a ConstantSampler
per worker), each chosen by a heuristic from the importance of the examples over the window before
(the warmup minus its first E_ignore epochs, then the previous interval). Test metric every epoch;
one CSV row per run in the paper's schema and a JSON log beside it (results.py, runlog.py); the
schedule and the repartition are schedule.py's.

Plain `python dpt.py` is world size 1. Under torchrun, the process group comes from RANK,
WORLD_SIZE and LOCAL_RANK (topology.py; NCCL with CUDA, gloo without; --backend overrides). Only
rank 0 evaluates, prints and writes results. Flags: flags.py; up-front checks: preflight.py; state and
checkpoints: checkpoint.py; the task: tasks.py; signals: stops.py.
"""
import os
import sys

import stops

if __name__ == "__main__":
    stops.at_import("dpt.py")  # a signal while torch imports: one line, not a traceback
    if "TORCHELASTIC_RUN_ID" in os.environ:
        stops.die_with_parent()  # first: torchrun's agent killed by SIGKILL must not leave its ranks training

import flags

if __name__ == "__main__":
    flags.parse_args(sys.argv[1:])  # a typo fails here, in a fraction of a second, before the torch import below

import time
from argparse import Namespace

import torch
from torch.nn.parallel import DistributedDataParallel as DDP

import checkpoint
import console
import data
import importance
import models
import preflight
import reducers
import results
import runlog
import schedule
import topology
import train
from checkpoint import Run
from flags import die
from preflight import Job
from samplers import WorkerBatches
from schedule import Policy, Window
from train import Trainer


# ---- the windows ---------------------------------------------------------------------------------

def close_window(run: Run, ended: Window, window: Window, job: Job, policy: Policy, args: Namespace,
                 score=None) -> None:
    """Between the window that `ended` and `window` (an interval): its partition, from what `ended`
    recorded and what `score()`, a scoring pass, finds when the measure needs one; its record in the
    log (how many examples each worker lost and gained), and its partition with --save-partitions."""
    n = job.top.workers
    before = schedule.assignment(job.train, run.partition, n, policy, ended.end - 1)
    if args.save_partitions:
        run.partitions[-1]["trained"] = trained_in(ended, run.partition, policy, job)
    scoring = time.perf_counter()
    scored = score() if score else None
    scoring = time.perf_counter() - scoring
    new = schedule.repartition(run.recorder, window, run.history, policy, n, job.task.labels(job.train), before,
                               job.shard_size, scored)
    run.partition, run.history = new.partition, new.history
    moved = schedule.movement(before, new.partition)
    run.log.intervals.append(runlog.Interval(window.first_epoch + 1, window.epochs, new.seconds,
                                             [len(p) for p in new.partition], moved, scoring if score else None))
    if args.save_partitions:
        run.partitions.append({"start_epoch": window.first_epoch + 1, "epochs": window.epochs,
                               "partition": new.partition, "importance": new.scores.cpu(), "movement": vars(moved)})


def open_window(run: Run, window: Window | None, job: Job) -> None:
    """An empty recorder for `window` (None: the restored one goes on); the streaming caches pin its
    partition's shards."""
    if window:
        run.window = window.index
        run.recorder = importance.Recorder(len(job.train), window.epochs, job.channels, job.top.device)
    for w, reader in zip(job.top.mine, job.readers):
        reader.set_window(None if run.partition is None else run.partition[w])


def trained_in(window: Window, partition, policy: Policy, job: Job) -> list[torch.Tensor]:
    """What each process's workers trained on in `window` (--save-partitions), in rank order everywhere."""
    return topology.gather_objects(schedule.trained(job.train, window, partition, job.top, policy))


# ---- the run -------------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> None:
    args = flags.parse_args(argv)
    with stops.Stops() as stop:  # from here every stop signal ends in one line (stops.py)
        job = None
        try:
            top = topology.of(args, world=args.preflight)
            job = preflight.check(args, top)
            if job.top.master and not job.finished and args.preflight is None:
                job.lock = preflight.acquire(job.checkpoint_path.with_suffix(".lock"))  # last: no check leaves it held
            if args.preflight is not None:
                print(preflight.planned(job, args) if not job.finished else
                      f"{results.run_name(job.csv, args.seed)} finished already: its row is in {job.csv}")
            elif job.finished:
                if top.master:
                    print(f"{results.run_name(job.csv, args.seed)} finished already: its row is in {job.csv}; "
                          "nothing to do")
            else:
                train_run(args, job, stop)
        except (topology.LaunchError, preflight.Refused) as err:
            die(str(err))
        except stops.Stopped as signal:  # during start-up: nothing trained yet
            kept = checkpoint.kept(job.checkpoint_path) if job and job.checkpoint else "nothing was trained"
            die(f"stopped by {signal} during start-up; {kept}", status=stops.status(signal.signum))
        finally:
            if job:
                preflight.release(job)


def build(args: Namespace, job: Job) -> Trainer:
    """The process group, the model (DDP under torchrun), the gradient exchange, the step and the
    optimizer, seeded as the paper's code: every process builds the same model from --seed."""
    top = job.top
    topology.start(top, args.timeout)
    if args.deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.benchmark = not args.deterministic
    torch.manual_seed(args.seed)
    if job.task.on_device(args):
        job.train, job.test = job.train.to(top.device), job.test.to(top.device)
    model = job.task.build_model(args, job.train, args.emulate_workers, args.emulation == "fused")
    model = job.task.to_device(model, args, top.device)
    if args.compile != "none":  # in place: DDP, the checkpoints and evaluation keep the same module
        model.compile(mode=None if args.compile == "default" else args.compile)
    ddp = DDP(model, device_ids=[top.local_rank] if top.device.type == "cuda" else None) if top.launched else model
    exchange = None
    if args.reducer != "none":  # this rank's worker under torchrun (a DDP hook), or every emulated worker
        exchange = reducers.make_state(args.reducer, args.density, top.workers,  # emulated: sparse from step 0
                                       workers=[top.rank] if top.launched else None)
        if top.launched:
            ddp.register_comm_hook(exchange, reducers.hook)
    # From here each rank draws its own dropout masks, as an emulation's workers do; rank 0 keeps --seed's.
    if top.rank:
        torch.manual_seed(args.seed + (top.rank << 32))
    step = train.Step.build(amp=args.amp == "bf16", workers=args.emulate_workers, batch_size=args.batch_size,
                            device=top.device, task=job.task, seed=args.seed,
                            sequential=args.emulation == "sequential", on_device=job.task.on_device(args),
                            eval_protocol=args.eval_protocol, channels=job.channels,
                            reducer=None if top.launched else exchange, readers=job.readers or None,
                            progress=console.progress_wanted(top.master), head=models.MODELS[args.model].head)
    optimizer = models.optimizer(model, args.lr, args.momentum, args.weight_decay, args.optimizer, args.optimizer_impl)
    return Trainer(model, ddp, exchange, step, optimizer)


def start(args: Namespace, job: Job, trainer: Trainer, plan: list[Window], provenance: dict) -> Run:
    """The run restored from its checkpoint, or a new one with its log's header."""
    if job.checkpoint:
        run = checkpoint.restore(job.checkpoint, trainer, job.top, len(job.train),
                                 plan[job.checkpoint["window"]].epochs, provenance)
        open_window(run, None, job)
    else:
        name = results.run_name(job.csv, args.seed)
        run = Run(log_name=f"{name}-{time.strftime('%Y%m%d-%H%M%S')}.json")
        run.log = runlog.RunLog(vars(job.workload), provenance, job.top.world, job.top.workers, len(job.train),
                                str(job.top.device), str(job.task.layout).removeprefix("torch."), job.train.source,
                                job.test.source, str(job.csv), job.shard_size, vars(args), storage=job.storage())
    run.log.args = vars(args)
    return run


def train_run(args: Namespace, job: Job, stop: stops.Stops) -> None:
    top, provenance, policy = job.top, results.provenance(), Policy.of(args)
    trainer = build(args, job)
    plan = schedule.windows(args.total_epochs, args.warmup_epochs, args.interval_epochs)
    run = start(args, job, trainer, plan, provenance)
    wandb_run = announce(args, job, run)
    wanted = importance.scored(args.measure) if args.heuristic != "none" else ()
    score = (lambda: job.task.score(trainer.model, job.train, wanted, trainer.step)) if wanted else None
    started = time.perf_counter() - run.elapsed_s
    stop.phase = "training"
    try:
        for window in plan[run.window:]:
            if run.epoch == window.first_epoch:  # a new window (a resumed run may be in the middle of one)
                if window.index > 0:
                    close_window(run, plan[window.index - 1], window, job, policy, args, score)
                elif args.save_partitions:
                    run.partitions.append({"start_epoch": 1, "epochs": window.epochs, "partition": None})
                open_window(run, window, job)
            batches = WorkerBatches(schedule.worker_samplers(job.train, run.partition, top.mine, top.workers,
                                                             policy), args.batch_size)
            for epoch in range(run.epoch, window.end):
                began = time.perf_counter()
                for reader in job.readers:
                    reader.set_epoch(epoch)
                stats = train.train_epoch(trainer.ddp, trainer.optimizer, batches, job.train, trainer.step, epoch,
                                          run.recorder, epoch - window.first_epoch)
                stats = train.epoch_figures(stats, epoch, trainer.exchange, job.readers)
                run.epoch = epoch + 1
                if top.master:
                    stats |= job.task.evaluate(trainer.model, job.test, trainer.step, epoch)
                    stats["epoch_s"] = time.perf_counter() - began
                    log_epoch(run, epoch, window.phase(args.heuristic), stats, args, job, wandb_run)
                asked = stop.agreed(top.device)
                if asked or (args.checkpoint_every and run.epoch % args.checkpoint_every == 0):
                    run.elapsed_s = time.perf_counter() - started
                    checkpoint.save(job.checkpoint_path, run, window.first_epoch, trainer, args, top, job.data)
                if asked and run.epoch < args.total_epochs:
                    die(f"stopped by {stop.asked or 'another rank'} after epoch {run.epoch}; "
                        f"{checkpoint.kept(job.checkpoint_path)}", status=stops.TEMPFAIL)
    except stops.Stopped as signal:  # SIGTERM, SIGHUP, a second Ctrl-C: now, keeping the last checkpoint
        die(f"stopped by {signal} in epoch {run.epoch + 1}; {checkpoint.kept(job.checkpoint_path)}",
            status=stops.status(signal.signum))
    except train.Diverged as err:  # on every rank alike: the training loss is all-reduced
        die(str(err), status=1)
    except (data.DataError, OSError) as err:  # data gone bad mid-run (a truncated shard), a full disk at a checkpoint
        at = "" if isinstance(err, checkpoint.Unwritable) else f"in epoch {run.epoch + 1}; "
        die(f"{err} ({at}no row was written; {checkpoint.kept(job.checkpoint_path)})", status=1)
    stop.phase = "finishing"  # a signal now waits until the log and the row are whole
    if args.save_partitions:
        run.partitions[-1]["trained"] = trained_in(plan[-1], run.partition, policy, job)
    if top.master:
        finish(run, args, job, time.perf_counter() - started, wandb_run)
        if stop.held:
            print(f"{stop.held} came while the results were written; they were finished first, and the run is "
                  "complete", flush=True)
    topology.stop()


def announce(args: Namespace, job: Job, run: Run):
    """The run's first line (rank 0), and its W&B run if asked for."""
    if not job.top.master:
        return None
    name = results.run_name(job.csv, args.seed)
    print(console.first_line(name, job.top, args, job, run.epoch if job.checkpoint else None), flush=True)
    if not args.wandb:
        return None
    import wandb
    return wandb.init(project=args.wandb_project, entity=args.wandb_entity, name=args.wandb_name or name,
                      config=vars(args), notes=args.description or None)


def log_epoch(run: Run, epoch: int, phase: str, stats: dict, args: Namespace, job: Job, wandb_run) -> None:
    run.metrics.append(stats[job.task.record.epoch_key])
    own = {"train_loss", "train_s", "tracking_s", "epoch_s", "exchange", "io"}
    run.log.epochs.append(runlog.Epoch(epoch + 1, phase, stats["train_loss"], stats["train_s"], stats["tracking_s"],
                                       stats["epoch_s"], {k: v for k, v in stats.items() if k not in own},
                                       stats.get("exchange"), stats.get("io")))
    seconds = [e.epoch_s for e in run.log.epochs]
    print(console.epoch_line(epoch, args.total_epochs, phase, stats, job.task.describe(stats), seconds), flush=True)
    if wandb_run:
        wandb_run.log({"epoch": epoch + 1, **stats})


def finish(run: Run, args: Namespace, job: Job, total_s: float, wandb_run) -> None:
    """The log and the saved partitions, then the row (appended under the lock); rank 0 only. A row that
    cannot be written takes the log with it, so a row and its log always go together; the checkpoint
    goes unless --keep-checkpoint."""
    values = results.row(args.seed, run.metrics, job.workload)
    task = job.task.record
    run.log.best = {task.column: values[task.column], "best_epoch": values["best_epoch"]}
    run.log.total_training_s = total_s
    run.log.tracking_s_per_epoch = sum(e.tracking_s for e in run.log.epochs) / len(run.log.epochs)
    log_path = job.csv.parent / "logs" / run.log_name  # beside the results given, wherever the checkpoint was made
    saved = log_path.with_suffix(".partitions.pt")
    try:
        results.write_json(log_path, run.log.to_json())
        if args.save_partitions:
            results.save_torch(saved, {"args": vars(args), "windows": run.partitions})
        try:
            results.append_row(job.csv, values)
        except (OSError, ValueError):
            log_path.unlink(missing_ok=True)
            saved.unlink(missing_ok=True)
            raise
    except (OSError, ValueError) as err:  # a full disk: retry; a row already there (RowExists): nothing to retry
        fix = "" if isinstance(err, (results.RowExists, results.LinkRefused)) else "; free space, rerun with --resume"
        die(f"the run finished but its results could not be written ({err}); no row added to {job.csv}{fix}", status=1)
    if not args.keep_checkpoint:
        job.checkpoint_path.unlink(missing_ok=True)
    print(f"best {task.metric_name} {values[task.column]:.{task.decimals}f}{task.unit} at epoch "
          f"{values['best_epoch']}, {total_s:.1f}s; row appended to {job.csv}, log {log_path}")
    if wandb_run:
        wandb_run.summary.update(run.log.best)
        wandb_run.finish()


if __name__ == "__main__":
    main()
