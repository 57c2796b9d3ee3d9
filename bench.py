"""Throughput of importance-aware DPT on one device, and the cost of everything it adds: ResNet-18
on CIFAR-shaped synthetic data (4 workers x 256 per step), the paper-style loop against ours with
importance tracking on and off (loss only, and every channel), the language models' tokens/s, the
gradient reducers' selection time against torch.topk, and the I/O simulator's speed.

    python bench.py                                  # full sizes (meant for a GPU); writes results/bench.json
    python bench.py --batch-size 16 --steps 3        # CPU-sized
    python bench.py --parts paths text --amp none    # some parts only (of those below, and speed), in float32
    python bench.py --concurrent 1 4 8               # a sweep's K runs per GPU: aggregate images/s, time of the study

Parts (--parts; the first three rows are "paths"):
  paper-style  one worker as each of the paper's GPUs ran it: PIL images through torchvision's
               transforms in a DataLoader (num_workers 0), DDP, per-example losses written into a
               matrix on the device by a Python loop with .item() (the paper's Table 6 overhead,
               timed as its code timed it), and the test set evaluated every epoch
  dataloader   ours: DataLoader of uint8 tensors, augmentation on the device, the workers emulated
               in one process, losses recorded by one scatter
  device       ours: the same with the dataset resident on the device (--data-on-device), loss only
               or every channel (loss, correct, EL2N, last-layer gradient norm)
  text         the GPT and the LSTM on byte chunks of 128, fused and sequential, every channel
  partition    importance + Stripes of 50,000 examples over a 15-epoch window, against the paper-style
               Python sort and loops
  reducers     one worker's selection on ResNet-18's and the GPT's gradient sizes, exdyna (and the
               other threshold reducers) against torch.topk, with the bytes sent against dense
  iosim        50,000 examples x 100 epochs x 4 workers through the trace simulator
  scoring      the Data Diet scoring pass (dd-el2n, dd-grand) against a training epoch of the same examples
  layout       each image model's step in NHWC and NCHW memory layout (the choice its record makes per device)
  speed        the device row with each speed option (optimizer kernels, layout, torch.compile modes)
Tracking share: the time importance tracking adds (the signals beyond the training loss, and the
scatter) as a share of the epoch, timed with CUDA events on a GPU (no sync per step). Every path's
images/s is an epoch as a run spends it: training, tracking and the per-epoch evaluation of a test
set a fifth of the training set's size (the paper's protocol), so "x paper" compares whole epochs.
"""
import argparse
import json
import math
import os
import platform
import sys
import time
from pathlib import Path
from queue import Empty

import flags

PARTS = ("paths", "text", "partition", "reducers", "iosim", "scoring", "layout", "speed")  # the order they run in


def build_parser() -> argparse.ArgumentParser:
    p = flags.Parser(prog="bench.py", description=__doc__.split("\n\n")[0], formatter_class=flags.HelpFormatter)
    p.add_argument("--workers", type=int, default=4, help="emulated workers (the paper: 4)")
    p.add_argument("--batch-size", type=int, default=256, help="per worker (images)")
    p.add_argument("--text-batch", type=int, default=64, help="chunks per worker (text)")
    p.add_argument("--seq-len", type=int, default=128, help="bytes a text chunk predicts")
    p.add_argument("--steps", type=int, default=20, help="steps per timed epoch (each worker's batches)")
    p.add_argument("--amp", choices=["none", "bf16"], metavar="AMP", default=None,
                   help="for our rows (default: bf16 on a GPU, none on a CPU)")
    p.add_argument("--densities", type=float, nargs="+", default=[0.001, 0.01], help="the reducers' densities")
    p.add_argument("--reducer-steps", type=int, default=5, help="steps before a reducer's selection is timed")
    p.add_argument("--partition-examples", type=int, default=50_000,
                   help="examples scored and partitioned in the overhead row (CIFAR's 50,000)")
    p.add_argument("--sim-examples", type=int, default=50_000, help="examples in the I/O simulator's row")
    p.add_argument("--score-examples", type=int, default=2048,
                   help="examples the scoring pass (dd-el2n, dd-grand) is timed on, against an epoch of them")
    p.add_argument("--sim-epochs", type=int, default=100, help="epochs in the I/O simulator's row (the paper's T)")
    p.add_argument("--concurrent", type=int, nargs="+", metavar="K",
                   help="instead of the table: K copies at once for each K (a sweep's runs per GPU), "
                        "aggregate images/s")
    p.add_argument("--compile-modes", nargs="*", metavar="MODE", default=None,
                   choices=["default", "reduce-overhead", "max-autotune"],
                   help="torch.compile modes timed in the speed-options table, of default, reduce-overhead and "
                        "max-autotune (if not given: the first two on a GPU, none on a CPU, where compiling ResNet-18 "
                        "takes minutes)")
    p.add_argument("--parts", nargs="+", choices=PARTS, default=list(PARTS), metavar="PART",
                   help=f"what to measure, of {', '.join(PARTS)}, run in that order (default: all; gpu-check.sh "
                        "times speed, whose compilations take minutes, last and apart)")
    p.add_argument("--out", default="results/bench.json",
                   help="where the figures go, as JSON (rewritten after each part)")
    return p


if __name__ == "__main__":
    build_parser().parse_args()  # --help and a typo answered in a fraction of a second, before torch's import

import torch
import torch.multiprocessing as mp
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import DataLoader
from torch.utils.data.distributed import DistributedSampler
from torchvision import transforms as T

import catalog as C
import data
import heuristics
import importance
import iosim
import lm
import models
import reducers
import results
import tasks
import text
import train
from samplers import WorkerBatches, for_window


def synthetic(n: int, seed: int = 0, dataset: str = "cifar10") -> data.Split:
    """n random images of `dataset`'s shape and classes."""
    g, spec = torch.Generator().manual_seed(seed), C.DATASETS[dataset]
    return data.Split(torch.randint(0, 256, (n, *spec.shape), dtype=torch.uint8, generator=g),
                      torch.randint(0, spec.classes, (n,), generator=g))


def test_split(split: data.Split, args, dataset: str = "cifar10") -> data.Split:
    """The test set an epoch evaluates: a fifth of the training set, as CIFAR's, in whole batches (the
    paper's protocol runs BatchNorm in training mode, which cannot take a batch of one)."""
    return synthetic(args.batch_size * max(1, len(split) // 5 // args.batch_size), seed=1, dataset=dataset)


class PaperStyleDataset(torch.utils.data.Dataset):
    """What the paper's code fed its DataLoader: PIL images through torchvision's transforms."""

    def __init__(self, split: data.Split):
        self.images = split.images.permute(0, 2, 3, 1).numpy()  # HWC uint8, as torchvision's CIFAR10.data
        self.labels = split.labels.tolist()
        spec = C.DATASETS["cifar10"]
        self.transform = T.Compose([T.RandomCrop(32, padding=spec.crop_padding), T.RandomHorizontalFlip(), T.ToTensor(),
                                    T.Normalize(spec.mean, spec.std)])

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        return self.transform(Image.fromarray(self.images[i])), self.labels[i], i


def paper_style(split: data.Split, args, device: torch.device, track: bool) -> dict:
    """One worker's epoch (1/workers of the data) as the paper's code ran one on each GPU: PIL images
    through torchvision's transforms in a DataLoader, the model in DDP (here a process group of one),
    and with `track` its loss matrix on the device written example by example: the example's index and
    loss each read with .item(), the element set from Python, and the index compared with 1 (its
    debugging print), timed as its overhead timer was (from after the forward pass through that
    loop); then rank 0's evaluation of the test set (a fifth of the training set's size, as CIFAR's),
    with the training transforms and the model in train mode. Twice: the first warms up, the second
    is timed; its images/s count the training images over the whole epoch, evaluation included."""
    import torch.distributed as dist

    torch.manual_seed(0)
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo", store=dist.HashStore(), rank=0,
                            world_size=1)
    try:
        model = models.build("resnet18", 10, 3).to(device)
        ddp = torch.nn.parallel.DistributedDataParallel(model, device_ids=[device.index or 0]
                                                        if device.type == "cuda" else None)
        optimizer = models.optimizer(model, 0.1, 0.9, 5e-4)
        sampler = DistributedSampler(range(len(split)), num_replicas=args.workers, rank=0, shuffle=True, seed=0)
        loader = DataLoader(PaperStyleDataset(split), batch_size=args.batch_size, sampler=sampler, num_workers=0,
                            pin_memory=device.type == "cuda")
        tests = DataLoader(PaperStyleDataset(test_split(split, args)), batch_size=args.batch_size, num_workers=0,
                           pin_memory=device.type == "cuda")
        matrix = torch.zeros(len(split), 2, device=device)
        for epoch in range(2):
            sampler.set_epoch(epoch)
            tracking = 0.0
            start = time.perf_counter()
            for images, labels, indices in loader:
                images, labels, indices = (t.to(device, non_blocking=True) for t in (images, labels, indices))
                outputs = ddp(images)
                if track:
                    if device.type == "cuda":  # the forward's kernels are not tracking's, though .item() waits for them
                        torch.cuda.synchronize()
                    tick = time.perf_counter()
                    per_example = F.cross_entropy(outputs, labels, reduction="none")
                    for i in range(len(images)):
                        matrix[indices[i].item()][epoch] = per_example[i].item()
                        if indices[i] == 1:  # the paper's code prints this example's row here
                            pass
                    tracking += time.perf_counter() - tick
                loss = F.cross_entropy(outputs, labels)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
            trained = time.perf_counter()
            with torch.no_grad():
                correct = 0
                for images, labels, _ in tests:
                    images, labels = images.to(device, non_blocking=True), labels.to(device, non_blocking=True)
                    correct += (ddp(images).argmax(dim=1) == labels).sum().item()
            if device.type == "cuda":
                torch.cuda.synchronize()
            seconds = time.perf_counter() - start
    finally:
        dist.destroy_process_group()
    return {"images_per_s": len(sampler) / seconds, "step_ms": 1000 * (trained - start) / len(loader),
            "tracking_percent": 100 * tracking / seconds, "eval_s": seconds - (trained - start)}


def ours(split: data.Split, args, device: torch.device, on_device: bool, track: bool, emulation: str,
         barrier=None, record: tuple[str, ...] = ("loss",), compile_mode: str = "none", impl: str = "default",
         channels_last: bool | None = None, model_name: str = "resnet18", dataset: str = "cifar10") -> dict:
    """All workers emulated in this process through train.train_epoch; the second epoch is timed
    (after `barrier`, when several copies must time the same moment), the first (which pays a
    compilation) apart. The speed options as dpt.py's --compile, --optimizer-impl; channels_last: the
    memory layout (None: the one the model's record chooses on this device, as dpt.py runs it)."""
    torch.manual_seed(0)
    task = tasks.of(dataset)
    model = task.build_model(argparse.Namespace(model=model_name), split, args.workers, emulation == "fused")
    layout = models.MODELS[model_name].layout(device) if channels_last is None else \
        torch.channels_last if channels_last else torch.contiguous_format
    model = model.to(device, memory_format=layout)
    task.layout = layout
    if compile_mode != "none":
        model.compile(mode=None if compile_mode == "default" else compile_mode)
    optimizer = models.optimizer(model, 0.1, 0.9, 5e-4, impl=impl)
    test = test_split(split, args, dataset).to(device)
    split = split.to(device) if on_device else split
    step = train.Step.build(
        amp=args.amp == "bf16",
        workers=args.workers,
        batch_size=args.batch_size,
        device=device,
        task=task,
        sequential=emulation == "sequential",
        on_device=on_device,
        channels=record,
        eval_protocol="paper",
    )
    batches = WorkerBatches(
        for_window(split, None, range(args.workers), args.workers, shuffle=True, sampler_seed=0, seed=0),
        args.batch_size,
    )
    recorder = importance.Recorder(len(split), 2, record, device) if track else None
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    first = time.perf_counter()
    train.train_epoch(model, optimizer, batches, split, step, 0, recorder, 0)
    first = time.perf_counter() - first
    if barrier is not None:
        barrier.wait()
    began = time.time()
    stats = train.train_epoch(model, optimizer, batches, split, step, 1, recorder, 1)
    evaluated = time.perf_counter()
    step.task.evaluate(model, test, step, 1)  # the paper's protocol, as the paper-style row's (it syncs: .item())
    evaluated = time.perf_counter() - evaluated
    seconds = stats["train_s"] + evaluated
    return {"images_per_s": len(split) / seconds, "step_ms": 1000 * stats["train_s"] / len(batches),
            "tracking_percent": 100 * stats["tracking_s"] / seconds, "eval_s": evaluated, "first_epoch_s": first,
            "images": len(split), "window": [began, time.time()],
            # the row's peak on the GPU: how many such runs one GPU holds (gpucheck.py plans by it)
            "memory_mb": torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None}


MIN_TIMED_STEPS = 10  # fewer: the timed epoch is too short for its figures to mean anything


def layout_rows(args, device: torch.device) -> list[dict]:
    """Each image model's device-resident step (tracking on, loss only) in NHWC (channels_last) and NCHW
    (contiguous) memory layout, on its dataset's image shape: what models.Spec.channels_last records
    per device type (the layout dpt.py runs, and logs)."""
    rows = []
    for name in C.names_of(C.MODELS, "image"):
        dataset = "fashionmnist" if name == "lenet5" else "cifar10"  # the model's own data: LeNet-5 is 28x28
        split = synthetic(args.workers * args.batch_size * args.steps, dataset=dataset)
        timed = {nhwc: ours(split, args, device, True, True, "fused", channels_last=nhwc, model_name=name,
                            dataset=dataset) for nhwc in (True, False)}
        chosen = models.MODELS[name].layout(device) == torch.channels_last
        rows.append({"model": name, "dataset": dataset, "nhwc_step_ms": timed[True]["step_ms"],
                     "nchw_step_ms": timed[False]["step_ms"],
                     "nchw_over_nhwc": timed[False]["step_ms"] / timed[True]["step_ms"],
                     "chosen": "channels_last" if chosen else "contiguous"})
    return rows


def print_layout(rows: list[dict], args) -> None:
    print("\nmemory layout: ms per step (each worker's batch of", args.batch_size, "x", args.workers, "workers)")
    for r in rows:
        print(f"  {r['model']:9s} {r['dataset']:13s} NHWC {r['nhwc_step_ms']:8.1f}  NCHW {r['nchw_step_ms']:8.1f}  "
              f"NCHW/NHWC {r['nchw_over_nhwc']:5.2f}  (dpt.py runs {r['chosen']} here)", flush=True)


def speed_rows(split: data.Split, args, device: torch.device, keep) -> list[dict]:
    """The device-resident fused row (tracking on, loss only) with each speed option, against itself
    without: the optimizer's kernels and each --compile-modes mode (its first
    epoch, the compilation, reported apart from the steady state); keep(rows) after each, as the
    compilations are the minutes a time limit may cut."""
    variants = [("plain", {}), ("fused optimizer", {"impl": "fused"}), ("foreach optimizer", {"impl": "foreach"})]
    variants += [(f"compile {mode}", {"compile_mode": mode}) for mode in args.compile_modes]
    rows = []
    for label, options in variants:
        row = ours(split, args, device, True, True, "fused", **options)
        rows.append({"option": label, **{k: row[k] for k in ("images_per_s", "step_ms", "first_epoch_s")}})
        rows[-1]["vs_plain"] = rows[-1]["images_per_s"] / rows[0]["images_per_s"]
        print(f"  {label:32s} {row['images_per_s']:10.0f} img/s  {rows[-1]['vs_plain']:5.2f}x  first epoch "
              f"{row['first_epoch_s']:.1f} s", flush=True)
        keep(rows)
    return rows


def _copy(args, copies: int, barrier, queue) -> None:
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // copies))  # share the cores, as a sweep's runs would
    torch.backends.cudnn.benchmark = True  # as main() sets for the single rows: a spawned copy starts without
    queue.put(ours(synthetic(args.workers * args.batch_size * args.steps), args, device, True, True, "fused", barrier))


def gather(copies: list, queue, k: int) -> list[dict]:
    """The copies' rows; a copy that dies (out of memory, say) stops the others instead of leaving
    them waiting at the barrier for ever."""
    rows = []
    while len(rows) < k:
        try:
            rows.append(queue.get(timeout=5))
        except Empty:
            dead = [c.exitcode for c in copies if c.exitcode not in (None, 0)]
            if dead:
                for c in copies:
                    c.terminate()
                raise SystemExit(f"bench.py: error: a copy of {k} at once exited with {dead[0]}; its output above "
                                 "says why (out of memory: fewer at once)")
    for c in copies:
        c.join()
    return rows


def concurrent(args, keep) -> list[dict]:
    """K copies of the device-resident fused row at once (a sweep's K runs per GPU), for each K,
    started together after their warm-up epoch: all their images over the span of their timed epochs.
    keep(rows) after each K: the figures of the Ks done survive a larger K that fails."""
    out = []
    context = mp.get_context("spawn")
    for k in args.concurrent:
        barrier, queue = context.Barrier(k), context.Queue()
        copies = [context.Process(target=_copy, args=(args, k, barrier, queue)) for _ in range(k)]
        for c in copies:
            c.start()
        rows = gather(copies, queue, k)
        span = max(r["window"][1] for r in rows) - min(r["window"][0] for r in rows)
        aggregate = sum(r["images"] for r in rows) / span
        # the paper's study: 1830 runs x 100 epochs x (50,000 training images + 10,000 test images,
        # a forward pass each: about a third of a training image's cost)
        hours = 1830 * 100 * (50_000 + 10_000 / 3) / aggregate / 3600
        out.append({"runs_at_once": k, "aggregate_images_per_s": aggregate, "study_hours": hours})
        keep(out)
        print(
            f"{k:3d} runs at once: {aggregate:10.0f} images/s in all; "
            f"the paper's 1830 runs would take about {hours:,.0f} h",
            flush=True,
        )
    return out


def partition_overheads(args, device: torch.device) -> dict:
    """Importance + partitioning of 50,000 examples over a 15-epoch window: ours on the device
    (variance, stable sort, Stripes), and the paper-style Python version (a sorted list of
    (example, importance) tuples, then a dict of lists filled in a loop)."""
    window = torch.rand(args.partition_examples, 15, device=device)

    def ours_once():
        scores, order = importance.rank("variance", {"loss": window}, None)
        return heuristics.partition(order.cpu(), args.workers, "stripes")

    def paper_once():
        variance, _ = torch.var_mean(window.cpu(), dim=1)
        ranked = sorted(enumerate(variance.tolist()), key=lambda pair: pair[1], reverse=True)
        parts = {w: [] for w in range(args.workers)}
        for position, (example, _) in enumerate(ranked):
            parts[position % args.workers].append(example)
        return parts

    out = {}
    for name, fn in (("ours_s", ours_once), ("paper_style_s", paper_once)):
        fn()
        times = []
        for _ in range(5):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
        out[name] = min(times)
    return out


def device_name(device: torch.device) -> str:
    return torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or platform.machine()


ALL_CHANNELS = importance.CHANNELS


def text_row(args, device: torch.device, model_name: str, emulation: str) -> dict:
    """A language model's tokens/s with every channel recorded, its second epoch timed."""
    torch.manual_seed(0)
    n = args.workers * args.text_batch * args.steps
    split = text.Split(torch.randint(0, 256, (n, args.seq_len + 1), dtype=torch.uint8), 0).to(device)
    model = lm.build(model_name, text.VOCAB, args.seq_len).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    step = train.Step.build(amp=args.amp == "bf16", workers=args.workers, batch_size=args.text_batch, device=device,
                            task=tasks.of("kjv"), sequential=emulation == "sequential", on_device=True,
                            channels=ALL_CHANNELS)
    batches = WorkerBatches(for_window(split, None, range(args.workers), args.workers, shuffle=True, sampler_seed=0,
                                       seed=0), args.text_batch)
    recorder = importance.Recorder(n, 2, ALL_CHANNELS, device)
    train.train_epoch(model, optimizer, batches, split, step, 0, recorder, 0)
    stats = train.train_epoch(model, optimizer, batches, split, step, 1, recorder, 1)
    return {"model": model_name, "emulation": emulation, "tokens_per_s": stats["tokens_per_s"],
            "tracking_percent": 100 * stats["tracking_s"] / stats["train_s"],
            "parameters": sum(p.numel() for p in model.parameters())}


def timed(fn, device: torch.device, repeats: int = 5) -> float:
    """Best of `repeats` wall times of fn(), synchronized on a GPU."""
    best = math.inf
    for _ in range(repeats + 1):  # the first is a warm-up
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    return best


def reducer_rows(args, device: torch.device) -> list[dict]:
    """One worker's selection from a gradient of ResNet-18's and the GPT's size (a heavy-tailed
    synthetic one, the threshold reducers' lambda at the value that selects k), against torch.topk of
    the same k; and the bytes one worker sends per step against a dense all-reduce."""
    sizes = {"resnet18": sum(p.numel() for p in models.build("resnet18", 10, 3).parameters()),
             "gpt": sum(p.numel() for p in lm.build("gpt", text.VOCAB, args.seq_len).parameters())}
    rows = []
    for model_name, d in sizes.items():
        g = torch.Generator(device=device).manual_seed(0)
        scale = torch.rand(d, device=device, generator=g) ** 4  # heavy-tailed magnitudes, as gradients' are
        grads = torch.randn(args.workers, d, device=device, generator=g) * scale
        for density in args.densities:
            k = max(1, int(density * d))
            topk_s = timed(lambda: torch.topk(grads[0].abs(), k, sorted=False), device)
            sample = grads[0].abs()[torch.randint(0, d, (min(d, 2**20),), device=device, generator=g)]
            settled = torch.quantile(sample.float(), 1 - density).item()  # the lambda that selects k of d
            for name in [n for n, r in reducers.REDUCERS.items() if r.select and not r.select_on_sum]:
                # a stationary gradient, no error feedback, lambda at its settled value: selection at rho
                state = reducers.make_state(name, density, args.workers, start_step=0, error_feedback=False,
                                            threshold=settled)
                for _ in range(args.reducer_steps):
                    reducers.reduce(state, grads)
                stats = state.take_stats()
                select_s = timed(lambda: reducers.select(state, grads[0]), device)
                rows.append({"model": model_name, "entries": d, "density": density, "reducer": name,
                             "select_ms": 1000 * select_s, "topk_ms": 1000 * topk_s,
                             "topk_over_select": topk_s / select_s,
                             "bytes_per_worker": stats["bytes_per_worker"], "dense_bytes": stats["dense_bytes"],
                             "measured_density": stats["density"]})
    return rows


def scoring_row(split: data.Split, args, device: torch.device) -> dict:
    """The Data Diet protocol's scoring pass (dd-el2n: a forward; dd-grand: per-example gradients over
    every weight) on `--score-examples` examples, against a training epoch of the same examples on the
    device path (4 workers fused, loss recorded): what a scoring-pass measure adds at each repartition."""
    n = min(len(split), args.score_examples)
    sub = data.Split(split.images[:n], split.labels[:n]).to(device)
    task = tasks.of("cifar10")
    torch.manual_seed(0)
    model = models.build("resnet18", 10, 3, workers=args.workers).to(device, memory_format=task.layout)
    step = train.Step.build(amp=args.amp == "bf16", workers=args.workers, batch_size=args.batch_size, device=device,
                            task=task, on_device=True)
    batches = WorkerBatches(for_window(sub, None, range(args.workers), args.workers, shuffle=True, sampler_seed=0,
                                       seed=0), max(1, min(args.batch_size, n // args.workers)))
    optimizer = models.optimizer(model, 0.1, 0.9, 5e-4)
    train.train_epoch(model, optimizer, batches, sub, step, 0)
    epoch_s = train.train_epoch(model, optimizer, batches, sub, step, 1)["train_s"]
    out = {"examples": n, "train_epoch_s": epoch_s}
    for signal in importance.SCORED:
        seconds = timed(lambda: task.score(model, sub, (signal,), step), device, repeats=1)
        out |= {f"{signal}_s": seconds, f"{signal}_share": seconds / epoch_s}
    return out


def iosim_row(args) -> dict:
    """The trace simulator on the paper's schedule (W20, I5), Stripes over random scores, shards of 100."""
    warmup = min(20, args.sim_epochs)  # the paper's W20-INT5 schedule, cut to the epochs asked for
    plan = [(0, warmup)] + [(e, min(5, args.sim_epochs - e)) for e in range(warmup, args.sim_epochs, 5)]
    windows = iosim.scored_windows(plan, args.sim_examples, lambda order, scores: heuristics.stripes(order, 4))
    st = iosim.storage(args.sim_examples, 100, 3072, args.sim_examples * 3072 // 4 + 100 * 3072, "partition")
    start = time.perf_counter()
    epochs, _ = iosim.simulate(windows, 4, st)
    return {"examples": args.sim_examples, "epochs": sum(n for _, n in plan), "workers": 4,
            "seconds": time.perf_counter() - start, "requests": int(epochs.requests.sum())}


def main() -> None:
    p = build_parser()
    args = p.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    args.amp = args.amp or ("bf16" if device.type == "cuda" else "none")
    if args.compile_modes is None:
        args.compile_modes = ["default", "reduce-overhead"] if device.type == "cuda" else []
    if args.steps < MIN_TIMED_STEPS:
        print(f"bench.py: warning: --steps {args.steps} times fewer than {MIN_TIMED_STEPS} steps per epoch: the "
              "images/s (and --concurrent's study estimate) are noise, not a measurement", file=sys.stderr)
    torch.backends.cudnn.benchmark = True
    result = {"date": time.strftime("%Y-%m-%d"), "device": str(device), "device_name": device_name(device),
              "torch": str(torch.__version__), "provenance": results.provenance(), "args": vars(args)}
    if args.concurrent:
        concurrent(args, lambda rows: write(args.out, {**result, "concurrent": rows}, quiet=True))
        print(f"wrote {args.out}")
        return
    print(f"{device} ({device_name(device)}), torch {torch.__version__}, ResNet-18, 32x32, {args.workers} workers x "
          f"{args.batch_size}, {args.steps} steps, amp {args.amp}", flush=True)

    def keep(key: str, value) -> None:
        # written after every part (and every speed option): a check stopped at its time limit keeps what it measured
        result[key] = value
        write(args.out, result, quiet=True)

    split = synthetic(args.workers * args.batch_size * args.steps)
    for part in [name for name in PARTS if name in args.parts]:
        if part == "speed":
            print("\nspeed options: the device-resident fused row (tracking on, loss only) with each, against plain",
                  flush=True)
            speed_rows(split, args, device, lambda rows: keep("speed_options", rows))
            continue
        key, measure, show = MEASURE[part]
        keep(key, measure(split, args, device))
        show(result[key], args)
    print(f"wrote {args.out}")


def path_rows(split: data.Split, args, device: torch.device) -> list[dict]:
    """The main table: the paper-style loop, then ours (DataLoader and device-resident, fused and
    sequential), tracking on and off, loss only and every channel."""
    rows = [{"path": "paper-style (1 worker)", "tracking": track, "channels": "loss",
             **paper_style(split, args, device, track)} for track in (True, False)]
    for label, on_device, emulation, record in (("dataloader, fused", False, "fused", ("loss",)),
                                                ("device, fused", True, "fused", ("loss",)),
                                                ("device, fused", True, "fused", ALL_CHANNELS),
                                                ("device, sequential", True, "sequential", ("loss",))):
        for track in (True, False) if record == ("loss",) else (True,):
            rows.append({"path": f"{label} ({args.workers} workers)", "tracking": track, "channels": ",".join(record),
                         **ours(split, args, device, on_device, track, emulation, record=record)})
    for row in rows:
        row["vs_paper_style"] = row["images_per_s"] / rows[0]["images_per_s"]
    return rows


def print_paths(rows: list[dict], args) -> None:
    print(f"{'path':34s} {'tracking':>8s} {'channels':>26s} {'img/s':>10s} {'ms/step':>9s} {'x paper':>8s} "
          f"{'tracking %':>11s}")
    for row in rows:
        share = f"{row['tracking_percent']:11.2f}" if row["tracking"] else ""
        print(f"{row['path']:34s} {'on' if row['tracking'] else 'off':>8s} {row['channels']:>26s} "
              f"{row['images_per_s']:10.0f} {row['step_ms']:9.1f} {row['vs_paper_style']:8.2f} {share}", flush=True)


def print_text(rows: list[dict], args) -> None:
    print(f"\ntext: byte chunks of {args.seq_len}, {args.workers} workers x {args.text_batch}, every channel recorded")
    for row in rows:
        print(f"  {row['model']:5s} {row['emulation']:10s} {row['tokens_per_s']:12.0f} tokens/s   tracking "
              f"{row['tracking_percent']:.2f}% of the epoch   ({row['parameters']:,} parameters)", flush=True)


def print_reducers(rows: list[dict], args) -> None:
    print("\nreducers: one worker's selection, against torch.topk of the same k; bytes one worker sends per step")
    for row in rows:
        print(f"  {row['model']:8s} d={row['entries']:>10,} rho={row['density']:<6g} {row['reducer']:10s} "
              f"{row['select_ms']:8.2f} ms  (topk {row['topk_ms']:8.2f} ms, {row['topk_over_select']:6.1f}x)  "
              f"{row['bytes_per_worker'] / 2**20:8.3f} MiB of {row['dense_bytes'] / 2**20:7.2f} dense", flush=True)


def print_iosim(simulated: dict, args) -> None:
    print(f"\niosim: {simulated['examples']:,} examples x {simulated['epochs']} epochs x {simulated['workers']} "
          f"workers ({simulated['requests']:,} requests) simulated in {simulated['seconds']:.1f} s", flush=True)


def print_scoring(scoring: dict, args) -> None:
    print(f"scoring pass (Data Diet protocol) on {scoring['examples']} examples: dd-el2n "
          f"{scoring['eval_el2n_s']:.2f} s ({100 * scoring['eval_el2n_share']:.0f}% of a training epoch of them), "
          f"dd-grand {scoring['eval_grand_s']:.2f} s ({100 * scoring['eval_grand_share']:.0f}%)", flush=True)


def print_partition(overheads: dict, args) -> None:
    print(f"importance + partition, {args.partition_examples} examples x 15 epochs: "
          f"ours {overheads['ours_s'] * 1000:.1f} ms, paper-style {overheads['paper_style_s'] * 1000:.1f} ms",
          flush=True)


# each part but speed: the key its figures go under in the JSON, how it is measured, how it is printed
MEASURE = {
    "paths": ("rows", path_rows, print_paths),
    "text": ("text", lambda split, args, device: [text_row(args, device, m, e) for m in ("gpt", "lstm")
                                                  for e in ("fused", "sequential")], print_text),
    "partition": ("partition_overheads", lambda split, args, device: partition_overheads(args, device),
                  print_partition),
    "reducers": ("reducers", lambda split, args, device: reducer_rows(args, device), print_reducers),
    "iosim": ("iosim", lambda split, args, device: iosim_row(args), print_iosim),
    "scoring": ("scoring", scoring_row, print_scoring),
    "layout": ("layout", lambda split, args, device: layout_rows(args, device), print_layout),
}


def write(path: str, result: dict, quiet: bool = False) -> None:
    # whole or not at all, also when the process is killed while writing; never through a link
    results.write_bytes(Path(path), json.dumps(result, indent=1).encode())
    if not quiet:
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
