"""Recommendation: NCF's NeuMF (ncf.py) on MovieLens as implicit feedback (movielens.py), evaluated by
leave-one-out ranking (HR@10, NDCG@10) of each user's held-out item among its sampled negatives:

    python -c "import tasks; t = tasks.of('movielens-1m'); print(t.record.metric_title, t.record.column)"

An example is a training positive or one of its --negatives sampled negatives (redrawn each epoch,
the same for every worker); its signals are the classifier's over two classes (ncf.NeuMF), so the
loss is the binary cross-entropy, "correct" whether the score's sign matches the label, EL2N
sqrt(2) |sigmoid - label|. The data is small: it always lives on the device.
"""
import math
from argparse import Namespace

import torch
from torch import nn

import importance
import models
import movielens
import ncf  # noqa: F401  (registers NeuMF: its Spec record)
import tasks

K = 10  # HR@K, NDCG@K


def ranks(scores: torch.Tensor) -> torch.Tensor:
    """0-based rank of column 0 (the held-out item) among each row's scores: the negatives scoring higher,
    and half of those scoring the same (so a model that scores everything alike ranks it in the middle,
    not first)."""
    above = (scores[:, 1:] > scores[:, :1]).sum(dim=1).double()
    return above + 0.5 * (scores[:, 1:] == scores[:, :1]).sum(dim=1).double()


def hit_and_ndcg(rank: torch.Tensor, k: int = K) -> tuple[torch.Tensor, torch.Tensor]:
    """Per user: 1 if the held-out item is in the top k, and 1 / log2(rank + 2) there (0 beyond)."""
    hit = (rank < k).double()
    return hit, hit / torch.log2(rank + 2)


class RecTask(tasks.Task):
    def load(self, args: Namespace, train: bool, num_workers: int = 1) -> movielens.Split:
        split = movielens.load(self.dataset.name, args.data_dir, train, args.negatives, args.test_negatives,
                               subset=args.subset, evaluate=0 if train else args.test_subset)
        if train:  # what a batch's negatives need
            self.num_items, self.negatives, self.seen = split.num_items, split.negatives, split.seen
        return split

    def on_device(self, args: Namespace) -> bool:
        return True

    def shape(self, train: movielens.Split) -> models.DataShape:
        return models.DataShape(users=train.num_users, items=train.num_items)

    def take(self, split: movielens.Split, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(user, positive item, example) per example, and its label: 1 for slot 0, 0 for a negative's."""
        row, slot = index // (1 + split.negatives), index % (1 + split.negatives)
        return torch.stack([split.users[row], split.items[row], index], dim=1), (slot == 0).long()

    def inputs(self, raw: torch.Tensor, index: torch.Tensor, seed: int, epoch: int, stream: int) -> torch.Tensor:
        """(user, item) pairs: a negative's item drawn for this epoch (the same on every worker)."""
        if self.seen.device != raw.device:
            self.seen = self.seen.to(raw.device)
        users, items, examples = raw.unbind(dim=1)
        drawn = movielens.draw_negatives(users, examples, self.seen, self.num_items, seed, epoch)
        positive = examples % (1 + self.negatives) == 0
        return torch.stack([users, torch.where(positive, items, drawn)], dim=1)

    def signals(self, logits, targets, channels, features=None, loss=None) -> dict[str, torch.Tensor]:
        out = importance.signals(logits, targets, channels, features, loss)
        if "grad_norm" in out:  # the head is one score, not two logits: its gradient is |p - y| [h, 1]
            out["grad_norm"] = out["grad_norm"] / math.sqrt(2)
        return out

    def throughput(self, examples: float, seconds: float, split) -> dict:
        return {"examples_per_s": examples / seconds}

    @torch.no_grad()
    def evaluate(self, model: nn.Module, split: movielens.Split, step, epoch: int) -> dict:
        """HR@10 and NDCG@10 (percent) of the held-out items, in eval mode and float32 (bf16 would tie scores)."""
        items = torch.cat([split.items[:, None], split.candidates], dim=1)
        users = split.users[:, None].expand_as(items)
        pairs = torch.stack([users.reshape(-1), items.reshape(-1)], dim=1).to(step.device)
        scores = []
        with models.eval_mode(model):
            for chunk in pairs.split(max(1, step.batch_size * step.workers * 16)):
                scores.append(model(chunk)[:, 1].float())
        hit, ndcg = hit_and_ndcg(ranks(torch.cat(scores).view(items.shape)))
        return {"hr10": 100 * hit.mean().item(), "ndcg10": 100 * ndcg.mean().item(), "test_users": len(items)}

    def describe(self, stats: dict) -> str:
        return f"HR@10 {stats['hr10']:6.2f}%  NDCG@10 {stats['ndcg10']:6.2f}%  {stats['examples_per_s']:8.0f} ex/s"


TASK = RecTask
