"""NeuMF (He et al., Neural Collaborative Filtering, WWW 2017): GMF (an elementwise product of user
and item factors) beside an MLP over concatenated user and item embeddings, joined by one linear
layer into a score; the recommendation task's model.

    python -c "import ncf, torch; m = ncf.NeuMF(10, 20); print(m(torch.tensor([[0, 3], [9, 19]])).shape)"

Its output is the logits of two classes, (0, score): their softmax is (1 - sigmoid, sigmoid), so the
cross-entropy with the interaction's label (1: a positive, 0: a sampled negative) is the binary
cross-entropy of the score, and the classifier's per-example signals (importance.signals) apply as
they are. Sizes as the original (factors 8, MLP 64 -> 32 -> 16 -> 8); embeddings drawn from N(0,
0.01), linear layers Xavier-uniform as its code.
"""
from argparse import Namespace

import torch
from torch import nn

import models


def mlp_sizes(factors: int, width: int) -> list[int]:
    """The MLP's layer widths: `width` (both embeddings together), halving down to `factors`."""
    sizes = [width]
    while sizes[-1] > factors:
        sizes.append(sizes[-1] // 2)
    assert sizes[-1] == factors, (factors, width)
    return sizes


class NeuMF(nn.Module):
    def __init__(self, num_users: int, num_items: int, factors: int = 8, width: int = 64, dropout: float = 0.0):
        super().__init__()
        sizes = mlp_sizes(factors, width)
        self.gmf_user, self.gmf_item = nn.Embedding(num_users, factors), nn.Embedding(num_items, factors)
        self.mlp_user, self.mlp_item = nn.Embedding(num_users, width // 2), nn.Embedding(num_items, width // 2)
        layers = []
        for a, b in zip(sizes, sizes[1:]):
            layers += [nn.Linear(a, b), nn.ReLU()] + ([nn.Dropout(dropout)] if dropout else [])
        self.mlp = nn.Sequential(*layers)
        self.head = nn.Linear(factors + sizes[-1], 1)
        for e in (self.gmf_user, self.gmf_item, self.mlp_user, self.mlp_item):
            nn.init.normal_(e.weight, std=0.01)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, pairs: torch.Tensor) -> torch.Tensor:
        """(B, 2) int64 (user, item) -> (B, 2) logits (0, score)."""
        users, items = pairs[:, 0], pairs[:, 1]
        gmf = self.gmf_user(users) * self.gmf_item(items)
        mlp = self.mlp(torch.cat([self.mlp_user(users), self.mlp_item(items)], dim=1))
        score = self.head(torch.cat([gmf, mlp], dim=1))
        return torch.cat([torch.zeros_like(score), score], dim=1)


@models.MODELS.register("neumf")
def neumf(args: Namespace, shape: models.DataShape) -> nn.Module:
    return NeuMF(shape.users, shape.items, args.factors, args.mlp_width)
