"""The same loop under Hugging Face Accelerate: the plug-in's sampler is kept (the data loader is not
passed to accelerator.prepare, which would shard it its own way), the rest as Accelerate has it.

    accelerate launch --num_processes 2 examples/accelerate_fashionmnist.py --data-dir data --subset 10000
    torchrun --nproc_per_node 2 examples/accelerate_fashionmnist.py --data-dir data --subset 10000
"""
import argparse

import torch
import torch.nn.functional as F
import torchvision
from accelerate import Accelerator
from torch.utils.data import DataLoader, Subset

from ddp_fashionmnist import lenet5
from importance_dpt import ImportanceAware


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-dir", default="data")
    p.add_argument("--subset", type=int, default=0, help="the first N training images (0: all)")
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--warmup", type=int, default=4)
    p.add_argument("--interval", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=32, help="per process")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    accelerator = Accelerator(cpu=not torch.cuda.is_available())  # starts the process group: the plan comes after
    torch.manual_seed(args.seed)
    normalize = torchvision.transforms.Compose([torchvision.transforms.ToTensor(),
                                                torchvision.transforms.Normalize((0.1307,), (0.3081,))])
    with accelerator.main_process_first():
        train = torchvision.datasets.FashionMNIST(args.data_dir, train=True, download=True, transform=normalize)
    test = torchvision.datasets.FashionMNIST(args.data_dir, train=False, transform=normalize)
    if args.subset:
        train = Subset(train, range(args.subset))
    plan = ImportanceAware(train, epochs=args.epochs, warmup=args.warmup, interval=args.interval, ignore=1,
                           seed=args.seed, batch_size=args.batch_size)
    loader = DataLoader(plan.dataset, batch_size=args.batch_size, sampler=plan.sampler)
    model = lenet5()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, nesterov=True, weight_decay=5e-4)
    model, optimizer = accelerator.prepare(model, optimizer)
    for epoch in range(args.epochs):
        plan.sampler.set_epoch(epoch)
        for index, (images, labels) in loader:
            losses = F.cross_entropy(model(images.to(accelerator.device)), labels.to(accelerator.device),
                                     reduction="none")
            loss = plan.update(losses, index)
            optimizer.zero_grad()
            accelerator.backward(loss)
            optimizer.step()
        if accelerator.is_main_process:
            net = accelerator.unwrap_model(model).eval()
            with torch.no_grad():
                correct = sum((net(x.to(accelerator.device)).argmax(1) == y.to(accelerator.device)).sum().item()
                              for x, y in DataLoader(test, batch_size=500))
            net.train()
            print(f"epoch {epoch + 1}: test accuracy {100 * correct / len(test):.2f}%", flush=True)
    accelerator.end_training()


if __name__ == "__main__":
    main()
