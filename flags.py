"""dpt.py's flags: one parser whose defaults are the paper's settings, and the checks of the flags
against each other. Torch-free, so a typo is reported in a fraction of a second (dpt.py parses
before it imports torch) and sweep.py resolves thousands of runs quickly:

    python -c "import flags; a = flags.parse_args(['--warmup-epochs', '30']); \
print(flags.workload(a, workers=4), a.interval_epochs)"

Every flag defines the run (a checkpoint resumes only under the same values) unless it is in
OPERATIONAL: where files go, how the run is launched, and how fast it goes.
"""
import argparse
import math
import os
import sys
import textwrap

import catalog as C
import workload as names
from workload import Workload

SEED_LIMIT = 2**32  # seeds feed torch's and Python's generators after small offsets (seed + epoch, ...)
FLOAT32_MAX = 3.4028234663852886e38  # the optimizer's arithmetic is float32: a larger lr overflows in its first step
MAX_EPOCHS = 100_000  # the paper trains 100: a larger T is a typo (it would run silently for days)
TIMEOUT = (1, 7 * 24 * 3600)  # seconds; datetime.timedelta and the process group's store take these, not 1e30
# Flags that do not change a run's result (beyond rounding): they may differ on --resume.
OPERATIONAL = {"data_dir", "results_dir", "description", "save_partitions", "checkpoint_every", "keep_checkpoint",
               "resume", "preflight", "backend", "optimizer_impl", "compile",
               "timeout", "deterministic", "emulate_workers", "emulation", "data_on_device", "data_source",
               "stream_remote", "stream_endpoint", "cache_bytes", "cache_policy", "cache_dir",
               "wandb", "wandb_project", "wandb_entity", "wandb_name"}


class BadFlag(ValueError):
    """A flag's value is impossible (alone or with the others); parse_args reports it as the caller's error."""


def die(message: str, prog: str = "dpt.py", *, status: int = 2) -> None:
    """Bad input (status 2) or a failed run: one line on stderr, no traceback. Under torchrun the first
    process of each node says it (every rank runs the same checks); any other process always does."""
    if "TORCHELASTIC_RUN_ID" not in os.environ or os.environ.get("LOCAL_RANK", "0") == "0":
        print(f"{prog}: error: {message}", file=sys.stderr, flush=True)
    sys.exit(status)


class Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:
        die(message, self.prog)


class HelpFormatter(argparse.HelpFormatter):
    """Each option's default once: appended unless its help already says it, or there is none; and lines
    broken between words only, never inside a name at its hyphen (grad-norm, shard-stripes)."""

    def _split_lines(self, text: str, width: int) -> list[str]:
        return textwrap.wrap(" ".join(text.split()), width, break_on_hyphens=False, break_long_words=False)

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        return "\n\n".join(textwrap.fill(" ".join(part.split()), width, initial_indent=indent,
                                          subsequent_indent=indent, break_on_hyphens=False, break_long_words=False)
                            for part in text.split("\n\n"))

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if "default" in text or action.default in (None, False, [], argparse.SUPPRESS) or not action.option_strings:
            return text
        return f"{text} (default: %(default)s)"


def build_parser() -> argparse.ArgumentParser:
    """Defaults are the paper's settings (section 5.1 and its code)."""
    p = Parser(prog="dpt.py", description="Importance-aware data-parallel training (Sheikholeslami et al., DAIS 2023).",
               allow_abbrev=False, formatter_class=HelpFormatter)
    w = p.add_argument_group("workload")
    w.add_argument("--dataset", default="cifar10", choices=list(C.DATASETS), metavar="NAME",
                   help="; ".join(f"{t.title}: {', '.join(C.names_of(C.DATASETS, t.name))}" for t in C.TASKS.values()))
    w.add_argument("--model", default=None, choices=list(C.MODELS), metavar="NAME",
                   help="per task, its default first: " + "; ".join(
                       f"{', '.join(sorted(C.names_of(C.MODELS, t.name), key=lambda m: m != t.default_model))} "
                       f"({t.title})" for t in C.TASKS.values()))
    w.add_argument("--heuristic", default="stripes", choices=[*C.HEURISTICS, *C.ALIASES], metavar="NAME",
                   help="how the sorted examples are partitioned: " + ", ".join(
                       f"{h} ({r.title}; the paper's code's {r.paper})" if r.paper != h else h
                       for h, r in C.HEURISTICS.items()) + "; the first is vanilla DPT every epoch (the baseline)")
    w.add_argument("--measure", default="variance", choices=list(C.MEASURES), metavar="NAME",
                   help=f"importance of an example from its recorded window: {', '.join(C.MEASURES)} "
                        "(docs/measures.md)")
    s = p.add_argument_group("schedule (epochs)")
    s.add_argument("--total-epochs", type=int, default=names.PAPER_EPOCHS, help="T")
    s.add_argument("--warmup-epochs", type=int, default=20,
                   help="E_warmup: vanilla epochs before the first partition (set to T under --heuristic none)")
    s.add_argument("--interval-epochs", type=int, default=5,
                   help="E_interval: epochs per fixed partition; the last interval also runs the (T - W) mod I "
                        "leftover epochs")
    s.add_argument("--ignore-epochs", type=int, default=names.PAPER_IGNORE,
                   help="E_ignore: first warmup epochs left out of the first importance")
    s.add_argument("--repartition", choices=["once", "interval"], metavar="REPARTITION", default=None,
                   help="interval: repartition every E_interval epochs (the default with a heuristic); once: one "
                        "partition for all T - W epochs after warmup (the only mode with --heuristic none)")
    s.add_argument("--shuffle", choices=["yes", "no"], default="yes",
                   help="reshuffle each worker's fixed partition every epoch")
    o = p.add_argument_group("optimization")
    o.add_argument("--batch-size", type=int, default=256, help="per worker (the paper: 4 workers x 256)")
    o.add_argument("--lr", type=float, default=0.1, help="constant, no schedule (as the paper's code)")
    o.add_argument("--optimizer", choices=["sgd", "adamw"], metavar="OPTIMIZER", default="sgd",
                   help="sgd: the paper's (Nesterov momentum, constant lr); "
                        "adamw: betas (0.9, 0.99), for language models")
    o.add_argument("--momentum", type=float, default=None,
                   help="SGD's Nesterov momentum (default 0.9; refused with adamw)")
    o.add_argument("--weight-decay", type=float, default=5e-4, help="L2 penalty (SGD) or decoupled decay (AdamW)")
    o.add_argument("--seed", type=int, default=names.PAPER_SEEDS[0],
                   help="torch.manual_seed in every process; also shuffles the fixed partitions and keys each "
                        "example's augmentation")
    o.add_argument("--sampler-seed", type=int, default=0,
                   help="seed of warmup's DistributedSampler (the paper's code left it at 0 for every run)")
    o.add_argument("--optimizer-impl", choices=list(C.OPTIMIZER_IMPLS), metavar="IMPL", default="default",
                   help="the optimizer's kernels: default (torch's: foreach on a GPU), for-loop, foreach, or fused "
                        "(one kernel for the whole update); the same update to float rounding")
    o.add_argument("--compile", choices=["none", "default", "reduce-overhead", "max-autotune"], metavar="MODE",
                   default="none", help="none, or torch.compile of the model (forward and backward) in mode default, "
                                        "reduce-overhead (adds CUDA graphs on a GPU) or max-autotune; the first "
                                        "steps pay the compilation (bench.py times it apart)")
    o.add_argument("--amp", choices=["none", "bf16"], metavar="AMP", default="none",
                   help="autocast the forward pass to bfloat16, but for the LSTM's recurrence (float32: autocast "
                        "would run cuDNN's in float16); defines the run: a float32 run does not resume under bf16")
    e = p.add_argument_group("data and evaluation")
    e.add_argument("--eval-protocol", choices=["paper", "standard"], metavar="PROTOCOL", default=None,
                   help="paper (the images' default): test set with the training augmentation, BatchNorm in "
                        "training mode (the paper's code); standard: eval mode, no augmentation (text: the only one)")
    e.add_argument("--subset", type=int, default=0, help="train on the first N training examples only (0: all)")
    e.add_argument("--test-subset", type=int, default=0, help="evaluate on the first N test examples only (0: all)")
    for task in C.TASKS.values():
        if task.options:
            group = p.add_argument_group(f"{task.title} (--dataset {' or '.join(C.names_of(C.DATASETS, task.name))}); "
                                         f"{task.flag_group}")
            for option in task.options:
                group.add_argument(option.flag, type=option.type, default=option.default,
                                   help=option.help + _model_defaults(option))
    d = p.add_argument_group("data source and storage (the I/O study; streaming.py, iosim.py); only --shard-size "
                             "changes the result")
    d.add_argument("--shard-size", type=int, default=None,
                   help="examples per storage shard, for --heuristic shard-stripes (default: the streaming remote's, "
                        "else min(100, N // n), so that every worker gets a shard)")
    d.add_argument("--data-source", choices=["memory", "streaming"], metavar="SOURCE", default="memory",
                   help="memory: the training split loaded whole; streaming: each worker reads its examples from the "
                        "shards at --stream-remote through its own cache (the test split still comes from --data-dir)")
    d.add_argument("--stream-remote", default=None,
                   help="a folder, or an s3:// URL, that `python streaming.py write` filled")
    d.add_argument("--stream-endpoint", default=None, help="an S3-compatible endpoint URL for an s3:// remote")
    d.add_argument("--cache-bytes", type=int, default=None,
                   help="each worker's cache (default: 1/n of the shards' bytes plus one shard)")
    d.add_argument("--cache-policy", choices=["lru", "partition"], metavar="POLICY", default="partition",
                   help="lru: whole shards, least recently used out; partition: the worker's partition's shards "
                        "pinned for the interval, LRU for the rest (iosim.py defines both)")
    d.add_argument("--cache-dir", default=None,
                   help="where the workers' caches go (default: <results-dir>/<workload>/cache/<run>)")
    x = p.add_argument_group("gradient exchange: a DDP communication hook (reducers.py); emulated workers need "
                             "--emulation sequential")
    x.add_argument("--reducer", choices=list(C.REDUCERS), default="none", metavar="NAME",
                   help="how gradients are exchanged: " + ", ".join(f"{r} ({C.REDUCERS[r].title})" for r in
                                                                     C.REDUCERS) + "; all but the first two sparsify, "
                        "with error feedback (docs/studies.md)")
    x.add_argument("--density", type=float, default=None,
                   help=f"the fraction of gradient entries a sparsifying reducer sends (default {C.DEFAULT_DENSITY})")
    r = p.add_argument_group("files and launch (do not change the result)")
    r.add_argument("--data-dir", default="data", help="where datasets are (or are downloaded to)")
    r.add_argument("--results-dir", default="results", help="CSV rows, JSON logs and checkpoints go under here")
    r.add_argument("--description", default="", help="free text stored in the log (and W&B notes)")
    r.add_argument("--save-partitions", action="store_true",
                   help="also save every partition and the examples each rank recorded per window "
                        "(<log>.partitions.pt)")
    r.add_argument("--checkpoint-every", type=int, default=10,
                   help="save the run's state every K epochs (0: never) to "
                        "<results-dir>/<workload>/checkpoints/<run>.pt; a stop (Ctrl-C, SIGUSR1) saves one anyway")
    r.add_argument("--keep-checkpoint", action="store_true",
                   help="keep the checkpoint when the run finishes (by default it goes with the row's arrival)")
    r.add_argument("--resume", action="store_true",
                   help="continue from this run's checkpoint if there is one (else start afresh), to the same "
                        "result row")
    r.add_argument("--backend", choices=["nccl", "gloo"], metavar="BACKEND", default=None,
                   help="process-group backend (default: nccl with CUDA, else gloo)")
    r.add_argument("--timeout", type=float, default=600,
                   help="seconds a rank waits in a collective for the others (a hung or dead rank) before the run "
                        "fails")
    r.add_argument("--preflight", type=int, default=None, metavar="N",
                   help="run every up-front check for a launch of N processes (torchrun's world size) and exit: 0 "
                        "and what the run would do, or 2 and why not; nothing is written (the launcher scripts run "
                        "it before torchrun)")
    r.add_argument("--deterministic", action="store_true",
                   help="torch.use_deterministic_algorithms(True), for bitwise repeatable runs")
    f = p.add_argument_group("speed: one device as N workers (does not change the result beyond rounding)")
    f.add_argument("--emulate-workers", type=int, default=1,
                   help="logical workers per process, with exactly the semantics of that many DDP ranks "
                        "(own batches, own BatchNorm statistics, averaged gradients); workers = processes x this")
    f.add_argument("--emulation", choices=["fused", "sequential"], metavar="EMULATION", default="fused",
                   help="fused: the workers' batches in one forward pass, BatchNorm per worker (fast); sequential: one "
                        "forward/backward per worker, gradients accumulated: bit for bit 2-rank DDP's arithmetic "
                        "(a reference)")
    f.add_argument("--data-on-device", action="store_true",
                   help="hold the datasets as uint8 tensors on the device and gather batches there (no DataLoader)")
    b = p.add_argument_group("Weights & Biases (optional)")
    b.add_argument("--wandb", action="store_true",
                   help="log each epoch to W&B (needs `wandb login`, or WANDB_MODE=offline)")
    b.add_argument("--wandb-project", default="importance-aware-dpt", help="the W&B project runs are logged to")
    b.add_argument("--wandb-entity", default=None, help="the W&B team or user (default: your account)")
    b.add_argument("--wandb-name", default=None, help="run name (default: the run's CSV file and seed)")
    return p


def _model_defaults(option: C.Option) -> str:
    """' (default 2 for lstm, 4 for gpt)' for an option whose default is per model."""
    per_model = [f"{m.defaults[option.dest]} for {m.name}" for m in C.MODELS.values() if option.dest in m.defaults]
    return f" (default {', '.join(per_model)})" if per_model and option.default is None else ""


def run_defining() -> list[str]:
    """The flags (dest names) that define a run: every flag not marked OPERATIONAL."""
    return [dest for dest in vars(build_parser().parse_args([])) if dest not in OPERATIONAL]


# What a vanilla run (--heuristic none) records may depend on these, its row does not.
PARTITIONING = {"measure", "warmup_epochs", "interval_epochs", "ignore_epochs", "repartition", "shuffle", "shard_size"}


def row_defining(heuristic: str) -> list[str]:
    """The flags that the rows of one result file must share: the run-defining ones, less the
    partitioning flags for vanilla runs (one baseline file serves every study)."""
    return [dest for dest in run_defining() if heuristic != "none" or dest not in PARTITIONING]


def settings(args: argparse.Namespace, workers: int) -> dict:
    """What the rows of the run's result file share (its manifest, results.claim): the row-defining
    flags but the seed, and the workers."""
    return {k: getattr(args, k) for k in row_defining(args.heuristic) if k != "seed"} | {"workers": workers}


def check_numbers(args: argparse.Namespace) -> None:
    """Finite, sensible numbers; raise BadFlag otherwise."""
    if args.total_epochs < 1:
        raise BadFlag(f"--total-epochs must be at least 1 (got {args.total_epochs})")
    if args.total_epochs > MAX_EPOCHS:
        raise BadFlag(f"--total-epochs {args.total_epochs} is beyond {MAX_EPOCHS:,} epochs, a schedule no run lives to "
                      "see (the paper's: 100); pass the epochs you mean")
    if args.batch_size < 1:
        raise BadFlag(f"--batch-size is per worker and must be at least 1 (got {args.batch_size})")
    if args.batch_size == 1 and C.MODELS[args.model].batchnorm:
        raise BadFlag(
            "--batch-size 1 gives every worker batches of one example, which BatchNorm cannot train on; pass at least 2"
        )
    if not (math.isfinite(args.lr) and args.lr > 0):
        raise BadFlag(f"--lr must be a positive finite number (got {args.lr})")
    for flag in ("lr", "weight_decay"):
        if getattr(args, flag) > FLOAT32_MAX:
            raise BadFlag(f"--{flag.replace('_', '-')} {getattr(args, flag)} is beyond float32's range "
                          f"({FLOAT32_MAX:.3g}), in which the optimizer computes; pass a value like the paper's "
                          f"{ {'lr': 0.1, 'weight_decay': 5e-4}[flag]}")
    if args.optimizer == "adamw" and args.momentum is not None:
        raise BadFlag("--momentum is SGD's; AdamW's betas are fixed at (0.9, 0.99): "
                      "drop --momentum or pass --optimizer sgd")
    args.momentum = 0.9 if args.momentum is None and args.optimizer == "sgd" else args.momentum
    if args.optimizer == "sgd" and not (math.isfinite(args.momentum) and 0 < args.momentum < 1):
        raise BadFlag(
            f"--momentum must be in (0, 1): Nesterov SGD needs momentum, "
            f"and 1 or more never decays (got {args.momentum})"
        )
    if not (math.isfinite(args.weight_decay) and args.weight_decay >= 0):
        raise BadFlag(f"--weight-decay must be a finite number >= 0 (got {args.weight_decay})")
    for flag in ("seed", "sampler_seed"):
        value = getattr(args, flag)
        if not 0 <= value < SEED_LIMIT:
            raise BadFlag(f"--{flag.replace('_', '-')} must be in 0..{SEED_LIMIT - 1} (got {value})")
    if args.subset < 0 or args.test_subset < 0:
        raise BadFlag("--subset and --test-subset take a number of examples (0 for all)")
    if args.emulate_workers < 1:
        raise BadFlag(
            f"--emulate-workers is the number of workers each process hosts "
            f"and must be at least 1 (got {args.emulate_workers})"
        )
    if args.checkpoint_every < 0:
        raise BadFlag(f"--checkpoint-every takes a number of epochs, 0 for never (got {args.checkpoint_every})")
    if args.preflight is not None and args.preflight < 1:
        raise BadFlag(f"--preflight takes the number of processes of the launch, at least 1 (got {args.preflight})")
    if not (math.isfinite(args.timeout) and TIMEOUT[0] <= args.timeout <= TIMEOUT[1]):
        raise BadFlag(f"--timeout takes seconds from {TIMEOUT[0]} (a collective needs that long to set up) to "
                      f"{TIMEOUT[1]} (a week) (got {args.timeout})")


def check_schedule(args: argparse.Namespace) -> None:
    """The schedule against itself, filling in the derived values; raise BadFlag on an impossible one."""
    T, W, I, E = args.total_epochs, args.warmup_epochs, args.interval_epochs, args.ignore_epochs
    if args.heuristic == "none":
        if args.repartition == "interval":
            raise BadFlag("--heuristic none trains vanilla DPT for all epochs and never repartitions; "
                "drop --repartition interval, or pick --heuristic stripes or blocks")
        args.warmup_epochs, args.repartition, args.interval_epochs, args.ignore_epochs = T, "once", 0, 0
        return
    if W > T:
        raise BadFlag(f"--warmup-epochs {W} exceeds --total-epochs {T}; warmup is part of the T epochs")
    args.repartition = args.repartition or "interval"
    if W < 1 or W == T:
        raise BadFlag(f"--heuristic {args.heuristic} needs 1 <= --warmup-epochs < --total-epochs (got W={W}, T={T}); "
            "for vanilla DPT throughout use --heuristic none")
    if E < 0 or E >= W:
        raise BadFlag(
            f"--ignore-epochs {E} leaves no warmup loss column to score (W={W}); "
            "pass 0 <= --ignore-epochs < --warmup-epochs"
        )
    if args.repartition == "once":
        args.interval_epochs = T - W
    elif I < 1:
        raise BadFlag(f"--interval-epochs must be at least 1 in interval mode (got {I}); or pass --repartition once")
    elif I > T - W:
        raise BadFlag(
            f"--interval-epochs {I} exceeds the {T - W} epochs after warmup; pass at most {T - W} or --repartition once"
        )


def check_task(args: argparse.Namespace) -> None:
    """The dataset, the model and the task's own flags agree; fill in the task's and the model's defaults."""
    task = C.task_of(args.dataset)
    args.model = args.model or task.default_model
    if C.MODELS[args.model].task != task.name:
        fits = " or ".join(C.names_of(C.MODELS, task.name))
        raise BadFlag(f"--model {args.model} does not fit --dataset {args.dataset} ({task.name}); pass --model {fits}")
    for other in C.TASKS.values():
        given = [o.flag for o in other.options if other is not task and getattr(args, o.dest) != o.default]
        if given:
            raise BadFlag(f"{', '.join(given)} are for {other.title} (--dataset "
                          f"{' or '.join(C.names_of(C.DATASETS, other.name))}); drop them for --dataset {args.dataset}")
    if args.eval_protocol is not None and args.eval_protocol not in task.eval_protocols:
        raise BadFlag(f"--eval-protocol {args.eval_protocol} is not a protocol of {task.title} (it has "
                      f"{', '.join(task.eval_protocols)}); drop it or pass {task.eval_protocols[0]}")
    args.eval_protocol = args.eval_protocol or task.eval_protocols[0]
    why = C.means_nothing(args.measure, task.name)
    if why and args.heuristic != "none":
        raise BadFlag(f"--measure {args.measure} has no meaning on {task.title} ({why}); pick another")
    if "labels" in C.HEURISTICS[args.heuristic].needs and not task.has_labels:
        raise BadFlag(f"--heuristic {args.heuristic} reads each example's class, and {task.title} examples have none; "
                      "pick another")
    model = C.MODELS[args.model]
    for option in task.options:
        value = getattr(args, option.dest)
        if value is not None and option.dest not in model.defaults and option.default is None \
                and any(option.dest in m.defaults for m in C.MODELS.values()):
            raise BadFlag(f"{option.flag} is not read by --model {args.model}; drop it")
        if value is None:
            value = model.defaults.get(option.dest)
            setattr(args, option.dest, value)
        if value is not None and option.minimum is not None and not value >= option.minimum:
            raise BadFlag(f"{option.flag} must be at least {option.minimum:g} (got {value})")
        if value is not None and option.below is not None and not value < option.below:
            raise BadFlag(f"{option.flag} must be in [{option.minimum:g}, {option.below:g}) (got {value})")
    fix = model.check(args) if model.check else None
    if fix:
        raise BadFlag(fix)
    if (args.dataset == "text") != (getattr(args, "text_file", None) is not None):
        raise BadFlag("--dataset text reads the file given by --text-file; "
                      "pass both (or --dataset kjv without --text-file)")


def check_exchange(args: argparse.Namespace) -> None:
    """A reducer and its density; fill in the default density."""
    if args.reducer != "none" and args.emulate_workers > 1 and args.emulation == "fused":
        raise BadFlag(f"--reducer {args.reducer} exchanges each worker's own gradient, which the fused emulation never "
                      f"forms; pass --emulation sequential")
    if args.reducer in ("none", "exact"):
        if args.density is not None:
            raise BadFlag(f"--density is for a sparsifying --reducer; --reducer {args.reducer} sends every entry "
                          "(drop it)")
        args.density = None if args.reducer == "none" else 1.0
        return
    args.density = C.DEFAULT_DENSITY if args.density is None else args.density
    if not (math.isfinite(args.density) and 0 < args.density <= 1):
        raise BadFlag(f"--density must be in (0, 1] (got {args.density}); e.g. 0.01 sends 1% of the gradient entries")


def check_storage(args: argparse.Namespace) -> None:
    """The streaming data path's flags, and the shard size shard-stripes needs."""
    streaming = args.data_source == "streaming"
    if streaming and not args.stream_remote:
        raise BadFlag("--data-source streaming reads shards from --stream-remote; pass the folder or s3:// URL that "
                      "`python streaming.py write` filled")
    given = [f"--{f.replace('_', '-')}" for f in ("stream_remote", "stream_endpoint", "cache_bytes", "cache_dir")
             if getattr(args, f) is not None]
    if given and not streaming:
        raise BadFlag(f"{', '.join(given)} are for --data-source streaming; pass it, or drop them")
    task = C.task_of(args.dataset)
    if streaming and not task.streams:
        raise BadFlag(f"--data-source streaming serves images; {task.title} data always lives on the device "
                      "(drop it)")
    if streaming and C.MEASURES[args.measure].protocol == "scoring pass" and args.heuristic != "none":
        raise BadFlag(f"--measure {args.measure} scores every example in a pass of its own, which needs the split in "
                      "memory; pick a measure of the training pass or --data-source memory")
    if streaming and "labels" in C.HEURISTICS[args.heuristic].needs:
        raise BadFlag(f"--heuristic {args.heuristic} reads every example's label, which a streamed split keeps in its "
                      "shards; pick another heuristic or --data-source memory")
    if streaming and args.data_on_device:
        raise BadFlag("--data-on-device holds the whole split on the device; --data-source streaming reads it "
                      "through caches: pick one")
    if args.cache_bytes is not None and args.cache_bytes < 1:
        raise BadFlag(f"--cache-bytes must be at least 1 (got {args.cache_bytes}); it must hold the largest shard")
    if args.shard_size is not None and args.shard_size < 1:
        raise BadFlag(f"--shard-size must be at least 1 (got {args.shard_size})")
    if args.shard_size is not None and args.heuristic != "shard-stripes" and not streaming:
        raise BadFlag("--shard-size is read by --heuristic shard-stripes (and a streaming run); drop it")


def check_speed(args: argparse.Namespace) -> None:
    """What --compile cannot take: the paths that run outside one compiled forward per step."""
    if args.compile == "none":
        return
    if args.emulation == "sequential" and args.emulate_workers > 1:
        raise BadFlag("--compile compiles the fused step; --emulation sequential runs each worker apart (the plain "
                      "reference): drop one")
    if args.reducer != "none":
        raise BadFlag(f"--compile is not supported with a gradient reducer yet (--reducer {args.reducer} exchanges "
                      "each worker's gradient outside the compiled graph): drop one")
    if "grad_norm" in C.MEASURES[args.measure].channels and args.heuristic != "none":
        raise BadFlag(f"--compile with --measure {args.measure}: the last-layer gradient channel hooks the head each "
                      "epoch, which recompiles the model every epoch; pick another measure or drop --compile")


def resolve(args: argparse.Namespace) -> argparse.Namespace:
    """Check the flags against each other and fill in the derived ones; BadFlag on bad input."""
    args.heuristic = C.ALIASES.get(args.heuristic, args.heuristic)
    check_exchange(args)
    check_task(args)
    check_storage(args)
    check_speed(args)
    check_numbers(args)
    check_schedule(args)
    return args


def parse_args(argv: list[str] | None = None, prog: str = "dpt.py") -> argparse.Namespace:
    """dpt.py's flags, resolved; bad input ends the program with one line from `prog` (exit 2)."""
    parser = build_parser()
    parser.prog = prog
    try:
        return resolve(parser.parse_args(argv))
    except BadFlag as err:
        die(str(err), prog)


def workload(args: argparse.Namespace, workers: int) -> Workload:
    """The run's workload, for `workers` workers (processes x --emulate-workers)."""
    return Workload(args.dataset, args.model, args.heuristic, args.measure, args.total_epochs, args.warmup_epochs,
                    args.interval_epochs, args.ignore_epochs, args.reducer, args.density, workers)
