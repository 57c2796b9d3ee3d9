"""The loss matrix (examples x epochs of the current window) and the importance measures.

dpt.py records every training step into a LossMatrix and turns it into an order of the
examples at each interval start; by hand:

    python -c "import torch, importance as I; m = I.LossMatrix(4, 2, 'cpu'); \
m.record(torch.arange(4), 0, torch.rand(4)); m.record(torch.arange(4), 1, torch.rand(4)); \
print(I.order(I.MEASURES['variance'](m.merged())))"

A new measure is a function (window: N x E float tensor) -> N scores, plus a line in MEASURES.
"""
import torch
import torch.distributed as dist


class LossMatrix:
    """Per-example training losses of one window (the warmup, or one interval), one column per epoch.

    Entries a process did not record stay NaN, so its rows say exactly which examples it trained on.
    Row N is a sink: keys >= N are padding copies (see samplers.WorkerBatches), written there so that
    padding never counts twice and recording needs no boolean mask (which would sync the device).
    """

    def __init__(self, num_examples: int, num_epochs: int, device: torch.device | str):
        assert num_epochs >= 1
        self.num_examples = num_examples
        self.values = torch.full((num_examples + 1, num_epochs), float("nan"), device=device)

    def record(self, keys: torch.Tensor, column: int, losses: torch.Tensor) -> None:
        """Scatter one batch's per-example losses into `column`: a single index_put on the device."""
        rows = torch.where(keys < self.num_examples, keys, self.num_examples)
        self.values[rows, column] = losses.detach().float()

    def restore(self, columns: torch.Tensor) -> None:
        """Put back the first columns of a window from a checkpoint (merged values: one process
        restores them, the others leave theirs empty, so the next merge sums to the same matrix)."""
        assert columns.shape[0] == self.num_examples and columns.shape[1] <= self.values.shape[1]
        self.values[: self.num_examples, : columns.shape[1]] = columns.to(self.values.device)

    def recorded_rows(self) -> torch.Tensor:
        """Indices of the examples this process recorded at least once in the window."""
        return (~torch.isnan(self.values[: self.num_examples])).any(dim=1).nonzero().squeeze(1)

    def merged(self) -> torch.Tensor:
        """The whole N x E matrix: every process's records summed with one all_reduce.

        Each example is recorded by exactly one process per epoch (padding goes to the sink), so
        the sum is that record; an example no process trained on in an epoch reads 0 there, as in
        the paper's code, which summed its workers' zero-initialized matrices."""
        merged = torch.nan_to_num(self.values, nan=0.0)
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            dist.all_reduce(merged)
        return merged[: self.num_examples]


def average(window: torch.Tensor) -> torch.Tensor:
    """Mean of each row, taken from `torch.var_mean` as the paper's code did: `.mean()` reduces in
    another order (up to about 5e-7 apart on 15 float32 columns), enough to swap near-tied examples."""
    return torch.var_mean(window, dim=1)[1]


def variance(window: torch.Tensor) -> torch.Tensor:
    """Unbiased variance of each row (`torch.var_mean`, as the paper's code). With one column it falls
    back to the average, as the paper's code did: with E_interval = 1, every repartition after the
    first is by average loss."""
    if window.shape[1] == 1:
        return average(window)
    return torch.var_mean(window, dim=1, correction=1)[0]


MEASURES = {"average": average, "variance": variance}


def order(scores: torch.Tensor) -> torch.Tensor:
    """Example indices, most important first (descending, as the paper's code sorted).
    Stable, so ties keep index order and every process derives the same order from the same scores."""
    return torch.sort(scores, descending=True, stable=True).indices

