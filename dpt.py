"""Importance-aware data-parallel training (Sheikholeslami et al., DAIS 2023): the training script.

    python dpt.py --dataset fashionmnist --subset 2000 --total-epochs 6 --warmup-epochs 3 \
        --interval-epochs 1 --ignore-epochs 1
    torchrun --nproc_per_node=4 dpt.py --dataset cifar10 --model resnet18 \
        --heuristic stripes --measure variance --warmup-epochs 20 \
        --interval-epochs 5 --ignore-epochs 5 --total-epochs 100 --seed 17611

Vanilla DPT for E_warmup epochs (a DistributedSampler per worker) while every example's training
signals are recorded; then intervals of E_interval epochs on fixed partitions (a ConstantSampler
per worker), each chosen by a heuristic from the importance of the examples over the window before
(the warmup minus its first E_ignore epochs, then the previous interval). Test metric every epoch;
one CSV row per run in the paper's schema and a JSON log beside it (results.py).

Plain `python dpt.py` is world size 1. Under torchrun, the process group comes from RANK,
WORLD_SIZE and LOCAL_RANK (topology.py; NCCL with CUDA, gloo without; --backend overrides). Only
rank 0 evaluates, prints and writes results. Every flag is in flags.py, every up-front check in
preflight.py, the run's state and its checkpoints in checkpoint.py, the task (images, text) in tasks.py.
"""
import os
import sys

import stops

if __name__ == "__main__" and "TORCHELASTIC_RUN_ID" in os.environ:
    stops.die_with_parent()  # first: torchrun's agent killed by SIGKILL must not leave its ranks training

import flags

if __name__ == "__main__":
    flags.parse_args(sys.argv[1:])  # a typo fails here, in a fraction of a second, before the torch import below

import math
import time
from argparse import Namespace

import torch
from torch.nn.parallel import DistributedDataParallel as DDP

import checkpoint
import console
import data
import heuristics
import importance
import models
import preflight
import reducers
import results
import samplers
import topology
import train
from checkpoint import Run
from flags import die
from preflight import Job
from samplers import WorkerBatches


# ---- the schedule ------------------------------------------------------------------------------

def windows(total: int, warmup: int, interval: int) -> list[tuple[int, int]]:
    """(first epoch, number of epochs) of the warmup and of each interval, as the paper's code:
    floor((T - W) / I) intervals after warmup, the last running I + (T - W) mod I epochs."""
    plan = [(0, warmup)]
    if warmup < total:
        count = (total - warmup) // interval
        plan += [(warmup + k * interval, interval) for k in range(count)]
        plan[-1] = (plan[-1][0], plan[-1][1] + (total - warmup) % interval)
    assert sum(n for _, n in plan) == total and all(n >= 1 for _, n in plan)
    return plan


def phase(args: Namespace, index: int) -> str:
    return "vanilla" if args.heuristic == "none" else "warmup" if index == 0 else f"interval {index}"


# ---- importance and partitions -------------------------------------------------------------------

def worker_samplers(dataset, partition: heuristics.Partition | None, workers: range, num_workers: int,
                    args: Namespace) -> list:
    """The samplers of `workers`: random slices every epoch in warmup (vanilla DPT), then their fixed
    partitions, shuffled from the run's seed as the paper's code did."""
    return samplers.for_window(dataset, partition, workers, num_workers, shuffle=args.shuffle == "yes",
                               sampler_seed=args.sampler_seed, seed=args.seed, batch_size=args.batch_size)


def movement(before: torch.Tensor, after: heuristics.Partition) -> dict:
    """Per worker, how many examples left its partition and how many joined, against `before` (the
    worker that trained each example in the last epoch)."""
    now = torch.empty_like(before)
    for w, part in enumerate(after):
        now[part] = w
    left, joined = samplers.movement(before, now, len(after))
    return {"left": left.sum(dim=1).tolist(), "joined": joined.sum(dim=1).tolist(), "moved": int(joined.sum())}


def repartition(recorder: importance.Recorder, window_index: int, history: dict | None, args: Namespace,
                num_workers: int, labels: torch.Tensor | None = None, before: torch.Tensor | None = None,
                shard_size: int | None = None, scored: dict | None = None
                ) -> tuple[torch.Tensor, heuristics.Partition, dict | None, float]:
    """Merge the window before `window_index` across processes, score, sort and partition: identical
    on every process, since all hold the same merged signals and the sorts are stable. The first
    E_ignore columns are dropped only when scoring the warmup (window_index 1), as the paper's code
    did; later intervals are scored whole. `history`: the run's per-example statistics before the
    window (forgetting counts over the whole run), advanced by the whole window; `scored`: what a
    scoring pass found, one column per signal; `labels` and `before` (who trained each example last)
    for the heuristics that read them. Returns the scores, the partition, the advanced history and the
    seconds taken."""
    start = time.perf_counter()
    ignore = args.ignore_epochs if window_index == 1 else 0
    merged = recorder.merged()
    history = importance.advance(history, merged)
    window = {c: m[:, ignore:] for c, m in merged.items()} | {c: v[:, None] for c, v in (scored or {}).items()}
    scores, order = importance.rank(args.measure, window, history)
    context = heuristics.Context(scores.cpu(), labels, before, window_index, args.seed, shard_size)
    parts = heuristics.partition(order.cpu(), num_workers, args.heuristic, context)
    return scores, parts, history, time.perf_counter() - start


def begin_window(run: Run, index: int, plan: list, args: Namespace, job: Job, score=None) -> None:
    """Start window `index`: after warmup, repartition from the window before (with what `score()`, a
    scoring pass, finds when the measure needs one; logging how many examples each worker lost and
    gained); then an empty recorder."""
    first_epoch, length = plan[index]
    n = job.top.workers
    if index > 0:
        before = samplers.assignment(worker_samplers(job.train, run.partition, range(n), n, args), first_epoch - 1)
        if args.save_partitions:
            run.partitions[-1]["trained"] = trained_in(plan[index - 1], run.partition, args, job)
        scoring = time.perf_counter()
        scored = score() if score else None
        scoring = time.perf_counter() - scoring
        scores, run.partition, run.history, seconds = repartition(run.recorder, index, run.history, args, n,
                                                                   job.task.labels(job.train), before, job.shard_size,
                                                                   scored)
        moved = movement(before, run.partition)
        run.log["intervals"].append({"start_epoch": first_epoch + 1, "epochs": length, "heuristic_s": seconds,
                                     **({"scoring_s": scoring} if score else {}),
                                     "partition_sizes": [len(p) for p in run.partition], "movement": moved})
        if args.save_partitions:
            run.partitions.append({"start_epoch": first_epoch + 1, "epochs": length, "partition": run.partition,
                                   "importance": scores.cpu(), "movement": moved})
    elif args.save_partitions:
        run.partitions.append({"start_epoch": 1, "epochs": length, "partition": None})
    run.window, run.recorder = index, importance.Recorder(len(job.train), length, job.channels, job.top.device)
    pin_shards(run, job)


def pin_shards(run: Run, job: Job) -> None:
    """The streaming caches pin the window's partition's shards."""
    for w, reader in zip(job.top.mine, job.readers):
        reader.set_window(None if run.partition is None else run.partition[w])


def trained_in(window: tuple[int, int], partition: heuristics.Partition | None, args: Namespace,
               job: Job) -> list[torch.Tensor]:
    """What each process's workers trained on in `window` (for --save-partitions), in rank order on
    every process: replayed from their samplers, which alone decide it."""
    first, length = window
    mine = worker_samplers(job.train, partition, job.top.mine, job.top.workers, args)
    return topology.gather_objects(samplers.trained(mine, range(first, first + length)))


# ---- the run -------------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> None:
    args = flags.parse_args(argv)
    try:
        top = topology.of(args, world=args.preflight)
        job = preflight.check(args, top)
        if job.top.master and not job.finished and args.preflight is None:
            job.lock = preflight.acquire(job.checkpoint_path.with_suffix(".lock"))  # last: no check can leave it held
    except (topology.LaunchError, preflight.Refused) as err:
        die(str(err))
    try:
        if args.preflight is not None:
            print(preflight.planned(job, args) if not job.finished else
                  f"{results.run_name(job.csv, args.seed)} finished already: its row is in {job.csv}")
        elif job.finished:
            if top.master:
                print(f"{results.run_name(job.csv, args.seed)} finished already: its row is in {job.csv}; "
                      "nothing to do")
        else:
            train_run(args, job)
    finally:
        preflight.release(job)


def kept(job: Job) -> str:
    """What a stopped run keeps, and how to go on."""
    if job.checkpoint_path.is_file():
        saved = checkpoint.epoch_of(job.checkpoint_path)
        return f"its checkpoint after epoch {saved} is {job.checkpoint_path}; rerun with --resume to go on"
    return "no checkpoint was saved (pass --checkpoint-every K to keep one every K epochs); a rerun starts afresh"


def build(args: Namespace, job: Job) -> tuple:
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
    model = job.task.to_device(job.task.build_model(args, job.train, args.emulate_workers, args.emulation == "fused"),
                               args, top.device)
    if args.compile != "none":  # in place: DDP, the checkpoints and evaluation keep the same module
        model.compile(mode=None if args.compile == "default" else args.compile)
    train_model = DDP(model, device_ids=[top.local_rank] if top.device.type == "cuda" else None) if top.launched \
        else model
    exchange = None
    if args.reducer != "none":  # this rank's worker under torchrun (a DDP hook), or every emulated worker
        exchange = reducers.make_state(args.reducer, args.density, top.workers,  # emulated: sparse from step 0
                                       workers=[top.rank] if top.launched else None)
        if top.launched:
            train_model.register_comm_hook(exchange, reducers.hook)
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
    return model, train_model, exchange, step, optimizer


def start(args: Namespace, job: Job, model, optimizer, exchange, plan: list, provenance: dict) -> Run:
    """The run restored from its checkpoint, or a new one with its log's header."""
    if job.checkpoint:
        run = checkpoint.restore(job.checkpoint, model, optimizer, exchange, job.top, len(job.train),
                                 plan[job.checkpoint["window"]][1], provenance)
        pin_shards(run, job)
    else:
        name = results.run_name(job.csv, args.seed)
        run = Run(log_name=f"{name}-{time.strftime('%Y%m%d-%H%M%S')}.json")
        run.log = {"workload": vars(job.workload), "provenance": provenance, "world_size": job.top.world,
                   "workers": job.top.workers, "examples": len(job.train), "device": str(job.top.device),
                   "data": job.train.source, "test_data": job.test.source, "csv": str(job.csv), "epochs": [],
                   "intervals": [], "resumed_at_epoch": [], "shard_size": job.shard_size}
    run.log["args"] = vars(args)
    return run


def train_run(args: Namespace, job: Job) -> None:
    top, provenance = job.top, results.provenance()
    model, train_model, exchange, step, optimizer = build(args, job)
    plan = windows(args.total_epochs, args.warmup_epochs, args.interval_epochs)
    run = start(args, job, model, optimizer, exchange, plan, provenance)
    wandb_run = announce(args, job, run)
    wanted = importance.scored(args.measure) if args.heuristic != "none" else ()
    score = (lambda: job.task.score(model, job.train, wanted, step)) if wanted else None  # the Data Diet protocol
    started = time.perf_counter() - run.elapsed_s
    with stops.Stops() as stop:
        try:
            for index in range(run.window, len(plan)):
                first_epoch, length = plan[index]
                if run.epoch == first_epoch:  # a new window (a resumed run may be in the middle of one)
                    begin_window(run, index, plan, args, job, score)
                batches = WorkerBatches(worker_samplers(job.train, run.partition, top.mine, top.workers, args),
                                        args.batch_size)
                for epoch in range(run.epoch, first_epoch + length):
                    began = time.perf_counter()
                    for reader in job.readers:
                        reader.set_epoch(epoch)
                    stats = train.train_epoch(train_model, optimizer, batches, job.train, step, epoch, run.recorder,
                                              epoch - first_epoch)
                    stats = epoch_figures(stats, epoch, exchange, job.readers)
                    run.epoch = epoch + 1
                    if top.master:
                        stats |= job.task.evaluate(model, job.test, step, epoch)
                        stats["epoch_s"] = time.perf_counter() - began
                        log_epoch(run, epoch, phase(args, index), stats, args, job, wandb_run)
                    asked = stop.agreed(top.device)
                    if asked or (args.checkpoint_every and run.epoch % args.checkpoint_every == 0):
                        run.elapsed_s = time.perf_counter() - started
                        checkpoint.save(job.checkpoint_path, run, first_epoch, model, optimizer, exchange, args, top,
                                        provenance, job.data)
                    if asked and run.epoch < args.total_epochs:
                        die(f"stopped by {stop.asked or 'another rank'} after epoch {run.epoch}; {kept(job)}",
                            status=stops.TEMPFAIL)
        except stops.Stopped as signal:  # SIGTERM, or a second Ctrl-C: now, keeping the last checkpoint
            die(f"stopped by {signal} in epoch {run.epoch + 1}; {kept(job)}", status=128 + signal.signum)
        except data.DataError as err:  # data that went bad while the run read it (a truncated shard)
            die(f"{err} (in epoch {run.epoch + 1}; no row was written; {kept(job)})", status=1)
    if args.save_partitions:
        run.partitions[-1]["trained"] = trained_in(plan[-1], run.partition, args, job)
    if top.master:
        finish(run, args, job, time.perf_counter() - started, wandb_run)
    topology.stop()


def announce(args: Namespace, job: Job, run: Run):
    """The run's first line (rank 0), and its W&B run if asked for."""
    if not job.top.master:
        return None
    top, name = job.top, results.run_name(job.csv, args.seed)
    saving = (f"a checkpoint every {args.checkpoint_every} epochs to {job.checkpoint_path}" if args.checkpoint_every
              else "no checkpoints (--checkpoint-every 0)")
    processes = f"{top.world} process{'' if top.world == 1 else 'es'}"
    print(f"{name}: {console.plural(top.workers, 'worker')} ({processes} x {args.emulate_workers}) x batch "
          f"{args.batch_size}, {len(job.train)} train / {len(job.test)} test examples (train: {job.train.source}; "
          f"test: {job.test.source}), {top.device}, {saving}; results -> {job.csv}"
          + (f"; resuming after epoch {run.epoch}" if job.checkpoint else ""), flush=True)
    if not args.wandb:
        return None
    import wandb
    return wandb.init(project=args.wandb_project, entity=args.wandb_entity, name=args.wandb_name or name,
                      config=vars(args), notes=args.description or None)


def epoch_figures(stats: dict, epoch: int, exchange, readers: list) -> dict:
    """The epoch's training figures, with this rank's gradient exchange (bytes it sent, its selection
    time) and what every worker's streaming cache fetched, as the filesystem counted it. A diverged
    run stops here, on every rank alike (the training loss is all-reduced)."""
    if not math.isfinite(stats["train_loss"]):
        die(f"training diverged in epoch {epoch + 1} (training loss {stats['train_loss']}); "
            "no row was written; lower --lr (or use --amp none)", status=1)
    if exchange:
        stats["exchange"] = exchange.take_stats()
    if readers:
        stats["io"] = [row for rows in topology.gather_objects([r.stats().iloc[-1].to_dict() for r in readers])
                       for row in rows]
    return stats


def log_epoch(run: Run, epoch: int, phase: str, stats: dict, args: Namespace, job: Job, wandb_run) -> None:
    run.metrics.append(stats[job.task.record.epoch_key])
    run.log["epochs"].append({"epoch": epoch + 1, "phase": phase, **stats})
    seconds = [e["epoch_s"] for e in run.log["epochs"] if "epoch_s" in e]
    print(console.epoch_line(epoch, args.total_epochs, phase, stats, job.task.describe(stats), seconds), flush=True)
    if wandb_run:
        wandb_run.log({"epoch": epoch + 1, **stats})


def finish(run: Run, args: Namespace, job: Job, total_s: float, wandb_run) -> None:
    """The log and the saved partitions, then the row (appended under the lock); rank 0 only. A row that
    cannot be written takes the log with it, so a row and its log always go together; the checkpoint
    goes unless --keep-checkpoint."""
    values = results.row(args.seed, run.metrics, job.workload)
    task = job.task.record
    best = {task.column: values[task.column], "best_epoch": values["best_epoch"]}
    run.log.update(best, total_training_s=total_s,
                   tracking_s_per_epoch=sum(e["tracking_s"] for e in run.log["epochs"]) / len(run.log["epochs"]))
    log_path = job.csv.parent / "logs" / run.log_name  # beside the results given, wherever the checkpoint was made
    saved = log_path.with_suffix(".partitions.pt")
    try:
        results.write_json(log_path, run.log)
        if args.save_partitions:
            results.save_torch(saved, {"args": vars(args), "windows": run.partitions})
        try:
            results.append_row(job.csv, values)
        except (OSError, ValueError):
            log_path.unlink(missing_ok=True)
            saved.unlink(missing_ok=True)
            raise
    except (OSError, ValueError) as err:
        die(f"the run finished but its results could not be written ({err}); no row was added to {job.csv}; "
            "free some space and rerun with --resume", status=1)
    if not args.keep_checkpoint:
        job.checkpoint_path.unlink(missing_ok=True)
    print(f"best {task.metric_name} {values[task.column]:.{task.decimals}f}{task.unit} at epoch "
          f"{values['best_epoch']}, {total_s:.1f}s; row appended to {job.csv}, log {log_path}")
    if wandb_run:
        wandb_run.summary.update(best)
        wandb_run.finish()


if __name__ == "__main__":
    main()
