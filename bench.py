"""Throughput of importance-aware DPT on one device: ResNet-18, CIFAR-shaped synthetic data,
4 workers x 256 per step, the paper-style loop against ours, tracking on and off.

    python bench.py                                  # full sizes (meant for a GPU)
    python bench.py --batch-size 16 --steps 3        # CPU-sized; CI runs this as a smoke command
    python bench.py --out bench.json                 # where the figures go (JSON), beside the printed table
    python bench.py --concurrent 1 4 8               # a sweep's K runs per GPU: aggregate images/s, time of the study

Rows:
  paper-style  one worker as each of the paper's GPUs ran it: PIL images through torchvision's
               transforms in a DataLoader (num_workers 0), per-example losses written into a CPU
               matrix by a Python loop with .item() (the paper's Table 6 overhead)
  dataloader   ours: DataLoader of uint8 tensors, augmentation on the device, the workers emulated
               in one process, losses recorded by one scatter
  device       ours: the same with the dataset resident on the device (--data-on-device)
each with tracking on and off; plus the time to compute importance and partition 50,000 examples
(ours on the device, and the paper-style Python sort and loops).
"""
import argparse
import json
import os
import platform
import time

import torch
import torch.multiprocessing as mp
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import DataLoader
from torch.utils.data.distributed import DistributedSampler
from torchvision import transforms as T

import data
import heuristics
import importance
import models
import train
from samplers import WorkerBatches, for_window


def synthetic(n: int, seed: int = 0) -> data.Split:
    g = torch.Generator().manual_seed(seed)
    return data.Split(torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=g),
                      torch.randint(0, 10, (n,), generator=g))


class PaperStyleDataset(torch.utils.data.Dataset):
    """What the paper's code fed its DataLoader: PIL images through torchvision's transforms."""

    def __init__(self, split: data.Split):
        self.images = split.images.permute(0, 2, 3, 1).numpy()  # HWC uint8, as torchvision's CIFAR10.data
        self.labels = split.labels.tolist()
        spec = data.SPECS["cifar10"]
        self.transform = T.Compose([T.RandomCrop(32, padding=4), T.RandomHorizontalFlip(), T.ToTensor(),
                                    T.Normalize(spec.mean, spec.std)])

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        return self.transform(Image.fromarray(self.images[i])), self.labels[i], i


def paper_style(split: data.Split, args, device: torch.device, track: bool) -> dict:
    """One worker's epoch (1/workers of the data), twice: the first warms up, the second is timed."""
    torch.manual_seed(0)
    model = models.build("resnet18", 10, 3).to(device)
    optimizer = models.optimizer(model, 0.1, 0.9, 5e-4)
    sampler = DistributedSampler(range(len(split)), num_replicas=args.workers, rank=0, shuffle=True, seed=0)
    loader = DataLoader(PaperStyleDataset(split), batch_size=args.batch_size, sampler=sampler, num_workers=0,
                        pin_memory=device.type == "cuda")
    matrix = [[0.0, 0.0] for _ in range(len(split))]
    for epoch in range(2):
        sampler.set_epoch(epoch)
        tracking = 0.0
        start = time.perf_counter()
        for images, labels, indices in loader:
            images, labels = images.to(device), labels.to(device)
            outputs = model(images)
            loss = F.cross_entropy(outputs, labels)
            per_example = F.cross_entropy(outputs, labels, reduction="none")
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            if track:
                tick = time.perf_counter()
                for i, index in enumerate(indices.tolist()):
                    matrix[index][epoch] = per_example[i].item()
                tracking += time.perf_counter() - tick
        if device.type == "cuda":
            torch.cuda.synchronize()
        seconds = time.perf_counter() - start
    return {"images_per_s": len(sampler) / seconds, "step_ms": 1000 * seconds / len(loader),
            "tracking_percent": 100 * tracking / seconds}


def ours(split: data.Split, args, device: torch.device, on_device: bool, track: bool, emulation: str,
         barrier=None, record: tuple[str, ...] = ("loss",)) -> dict:
    """All workers emulated in this process through train.train_epoch; the second epoch is timed
    (after `barrier`, when several copies must time the same moment)."""
    torch.manual_seed(0)
    model = models.build("resnet18", 10, 3, workers=args.workers, fused=emulation == "fused").to(
        device, memory_format=torch.channels_last
    )
    optimizer = models.optimizer(model, 0.1, 0.9, 5e-4)
    split = split.to(device) if on_device else split
    step = train.Step.build(
        amp=args.amp == "bf16",
        workers=args.workers,
        batch_size=args.batch_size,
        device=device,
        spec=data.SPECS["cifar10"],
        sequential=emulation == "sequential",
        on_device=on_device,
        channels=record,
    )
    batches = WorkerBatches(
        for_window(split, None, range(args.workers), args.workers, shuffle=True, sampler_seed=0, seed=0),
        args.batch_size,
    )
    recorder = importance.Recorder(len(split), 2, record, device) if track else None
    train.train_epoch(model, optimizer, batches, split, step, 0, recorder, 0)
    if barrier is not None:
        barrier.wait()
    began = time.time()
    stats = train.train_epoch(model, optimizer, batches, split, step, 1, recorder, 1)
    return {"images_per_s": stats["images_per_s"], "step_ms": 1000 * stats["train_s"] / len(batches),
            "tracking_percent": 100 * stats["tracking_s"] / stats["train_s"],
            "images": len(split), "window": [began, time.time()]}


def _copy(args, copies: int, barrier, queue) -> None:
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.type == "cpu":
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // copies))  # share the cores, as a sweep's runs would
    queue.put(ours(synthetic(args.workers * args.batch_size * args.steps), args, device, True, True, "fused", barrier))


def concurrent(args) -> list[dict]:
    """K copies of the device-resident fused row at once (a sweep's K runs per GPU), for each K,
    started together after their warm-up epoch: all their images over the span of their timed epochs."""
    out = []
    context = mp.get_context("spawn")
    for k in args.concurrent:
        barrier, queue = context.Barrier(k), context.Queue()
        copies = [context.Process(target=_copy, args=(args, k, barrier, queue)) for _ in range(k)]
        for c in copies:
            c.start()
        rows = [queue.get() for _ in copies]
        for c in copies:
            c.join()
        span = max(r["window"][1] for r in rows) - min(r["window"][0] for r in rows)
        aggregate = sum(r["images"] for r in rows) / span
        # the paper's study: 1830 runs x 100 epochs x (50,000 training images + 10,000 test images,
        # a forward pass each: about a third of a training image's cost)
        hours = 1830 * 100 * (50_000 + 10_000 / 3) / aggregate / 3600
        out.append({"runs_at_once": k, "aggregate_images_per_s": aggregate, "study_hours": hours})
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


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--workers", type=int, default=4)
    p.add_argument("--batch-size", type=int, default=256, help="per worker")
    p.add_argument("--steps", type=int, default=20, help="steps per timed epoch (each worker's batches)")
    p.add_argument("--amp", choices=["none", "bf16"], default="bf16" if torch.cuda.is_available() else "none",
                   help="for our rows (default: bf16 on a GPU, none on a CPU)")
    p.add_argument("--partition-examples", type=int, default=50_000)
    p.add_argument(
        "--concurrent",
        type=int,
        nargs="+",
        metavar="K",
        help="instead of the table: K copies at once for each K (a sweep's runs per GPU), aggregate images/s",
    )
    p.add_argument("--out", default="bench.json")
    args = p.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.backends.cudnn.benchmark = True
    split = synthetic(args.workers * args.batch_size * args.steps)

    if args.concurrent:
        result = {"date": time.strftime("%Y-%m-%d"), "device": str(device), "torch": str(torch.__version__),
                  "args": vars(args), "concurrent": concurrent(args)}
        with open(args.out, "w") as f:
            json.dump(result, f, indent=1)
        print(f"wrote {args.out}")
        return
    rows = []
    for track in (True, False):
        rows.append({"path": "paper-style (1 worker)", "tracking": track, **paper_style(split, args, device, track)})
    for label, on_device, emulation in (("dataloader, fused", False, "fused"), ("device, fused", True, "fused"),
                                        ("device, sequential", True, "sequential")):
        for track in (True, False):
            rows.append({"path": f"{label} ({args.workers} workers)", "tracking": track,
                         **ours(split, args, device, on_device, track, emulation)})
    overheads = partition_overheads(args, device)

    base = rows[0]["images_per_s"]
    print(
        f"\n{device} ({device_name(device)}), "
        f"torch {torch.__version__}, ResNet-18, 32x32, {args.workers} workers x {args.batch_size}, "
        f"{args.steps} steps, amp {args.amp}"
    )
    print(f"{'path':34s} {'tracking':>8s} {'img/s':>10s} {'ms/step':>9s} {'x paper':>8s} {'tracking % of epoch':>20s}")
    for row in rows:
        row["vs_paper_style"] = row["images_per_s"] / base
        share = f"{row['tracking_percent']:20.2f}" if row["tracking"] else ""
        print(f"{row['path']:34s} {'on' if row['tracking'] else 'off':>8s} {row['images_per_s']:10.0f} "
              f"{row['step_ms']:9.1f} {row['vs_paper_style']:8.2f} {share}")
    print(f"importance + partition, {args.partition_examples} examples x 15 epochs: "
          f"ours {overheads['ours_s'] * 1000:.1f} ms, paper-style {overheads['paper_style_s'] * 1000:.1f} ms")
    result = {
        "date": time.strftime("%Y-%m-%d"),
        "device": str(device),
        "device_name": device_name(device),
        "torch": str(torch.__version__),
        "args": vars(args),
        "rows": rows,
        "partition_overheads": overheads,
    }
    with open(args.out, "w") as f:
        json.dump(result, f, indent=1)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
