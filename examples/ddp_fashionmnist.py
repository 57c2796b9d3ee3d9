"""Importance-aware DPT in a plain PyTorch DDP script (the plug-in: importance_dpt), on Fashion-MNIST
with a LeNet-5, on CPUs (gloo) or GPUs (NCCL). After `pip install .` in a clone (no PYTHONPATH needed):

    torchrun --nproc_per_node 2 examples/ddp_fashionmnist.py --data-dir data --subset 10000 --epochs 8

--data-dir holds torchvision's FashionMNIST/raw (downloaded there when missing and online). What
changes from a vanilla DDP loop is marked "the plug-in": the dataset and sampler it gives, and update().
"""
import argparse
import os

import torch
import torch.distributed as dist
import torch.nn.functional as F
import torchvision
from torch import nn
from torch.utils.data import DataLoader, Subset

from importance_dpt import ImportanceAware


def lenet5(classes: int = 10) -> nn.Module:
    return nn.Sequential(nn.Conv2d(1, 20, 5), nn.BatchNorm2d(20), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Conv2d(20, 50, 5), nn.BatchNorm2d(50), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                         nn.Linear(800, 500), nn.ReLU(), nn.Linear(500, 84), nn.ReLU(), nn.Linear(84, classes))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-dir", default="data")
    p.add_argument("--subset", type=int, default=0, help="the first N training images (0: all)")
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--warmup", type=int, default=4)
    p.add_argument("--interval", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=32, help="per rank")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    launched = "RANK" in os.environ
    if launched:
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    rank = dist.get_rank() if launched else 0
    device = torch.device(f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}" if torch.cuda.is_available() else "cpu")
    torch.manual_seed(args.seed)
    normalize = torchvision.transforms.Compose([torchvision.transforms.ToTensor(),
                                                torchvision.transforms.Normalize((0.1307,), (0.3081,))])
    if rank == 0:  # one process downloads (when missing and online), the others wait for it
        torchvision.datasets.FashionMNIST(args.data_dir, train=True, download=True)
    if launched:
        dist.barrier()
    train = torchvision.datasets.FashionMNIST(args.data_dir, train=True, transform=normalize)
    test = torchvision.datasets.FashionMNIST(args.data_dir, train=False, transform=normalize)
    if args.subset:
        train = Subset(train, range(args.subset))

    # the plug-in: the paper's schedule over the run's epochs, Stripes over each example's loss variance
    plan = ImportanceAware(train, epochs=args.epochs, warmup=args.warmup, interval=args.interval, ignore=1,
                           measure="variance", heuristic="stripes", seed=args.seed, batch_size=args.batch_size)
    loader = DataLoader(plan.dataset, batch_size=args.batch_size, sampler=plan.sampler)

    model = lenet5().to(device)
    ddp = nn.parallel.DistributedDataParallel(model) if launched else model
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, nesterov=True, weight_decay=5e-4)
    for epoch in range(args.epochs):
        plan.sampler.set_epoch(epoch)  # the plug-in: at an interval's start, every rank's new partition
        for index, (images, labels) in loader:
            losses = F.cross_entropy(ddp(images.to(device)), labels.to(device), reduction="none")
            loss = plan.update(losses, index)  # the plug-in: records each example's loss, returns the mean
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        if rank == 0:
            model.eval()
            with torch.no_grad():
                correct = sum((model(x.to(device)).argmax(1) == y.to(device)).sum().item()
                              for x, y in DataLoader(test, batch_size=500))
            model.train()
            print(f"epoch {epoch + 1}: {'warmup' if plan.window.index == 0 else f'interval {plan.window.index}'}, "
                  f"test accuracy {100 * correct / len(test):.2f}%", flush=True)
    if launched:
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
