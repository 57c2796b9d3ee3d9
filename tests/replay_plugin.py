"""Replay recorded per-example losses through the plug-in, under torchrun or alone (a test's helper):
each rank trains, epoch by epoch, on what the plan's sampler gives it, and passes the recorded loss of
each of those examples to update(); rank 0 saves the partition of every window.

    torchrun --nproc_per_node 2 tests/replay_plugin.py LOSSES.pt PARTITIONS.pt
"""
import os
import sys

import torch
import torch.distributed as dist

from importance_dpt import ImportanceAware

losses_path, out = sys.argv[1:3]
saved = torch.load(losses_path, weights_only=False)
if "RANK" in os.environ:
    dist.init_process_group("gloo")
losses = saved["losses"]  # (epochs, N)
plan = ImportanceAware(range(losses.shape[1]), **saved["plan"])
partitions = []
for epoch in range(losses.shape[0]):
    plan.sampler.set_epoch(epoch)
    if plan.window.first_epoch == epoch:
        partitions.append(plan.partition)
    keys = torch.tensor(list(plan.sampler))
    for batch in keys.split(10):
        plan.update(losses[epoch, batch % losses.shape[1]], batch)
if not dist.is_initialized() or dist.get_rank() == 0:
    torch.save(partitions, out)
if dist.is_initialized():
    dist.destroy_process_group()
