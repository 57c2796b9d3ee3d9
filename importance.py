"""The recorder (per-example training signals, examples x epochs of the current window, one matrix
per channel) and the importance measures.

dpt.py records every training step into a Recorder and turns the window into an order of the
examples at each interval start; by hand:

    python -c "import torch, importance as I; r = I.Recorder(4, 2, ('loss',), 'cpu'); \
r.record(torch.arange(4), 0, {'loss': torch.rand(4)}); r.record(torch.arange(4), 1, {'loss': torch.rand(4)}); \
print(I.rank('variance', r.merged(), None))"

A window is one (N, E) float32 matrix per recorded channel ("loss", "correct", "el2n",
"grad_norm": see the notes at CHANNELS, and what a scoring pass adds: SCORED); `history` holds the
run's per-example statistics so far (`advance`), or is None. A new measure is a function (window,
history) -> N scores (higher: more important, sorted first) registered with `@MEASURES.register(name)`,
plus its record in catalog.MEASURES (the channels it reads, its tie-break, what it means on each task,
its paper); a run records exactly the channels its measure reads.
"""
from collections.abc import Callable

import torch
import torch.distributed as dist
import torch.nn.functional as F

if __package__:  # in the package importance_dpt (pip install): its siblings; from a clone: top-level modules
    from . import catalog as C
else:
    import catalog as C

# "loss" cross-entropy; "correct" 1.0 if argmax(logits) == label else 0.0 (text: the chunk's token
# accuracy); "el2n" ||softmax(logits) - onehot(label)||_2 (text: mean over the chunk's tokens);
# "grad_norm" ||p - y|| * sqrt(||h||^2 + 1). On text, p = exp(-loss) is the geometric mean of the
# chunk's true-token probabilities. `signals` computes them from the training pass's logits.
CHANNELS = ("loss", "correct", "el2n", "grad_norm")
# What a scoring pass computes at a window's start, one value per example (tasks.Task.score): the
# Data Diet protocol's EL2N and GraNd, in eval mode on un-augmented examples.
SCORED = ("eval_el2n", "eval_grand")


def example_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Each example's cross-entropy, (B,): images (B, C) with labels (B,), or text (B, L, V) with next
    bytes (B, L), where an example's loss is the mean over its L tokens. Training minimizes its mean."""
    z = logits.float().reshape(-1, logits.shape[-1])
    return F.cross_entropy(z, targets.reshape(-1), reduction="none").view(targets.shape[0], -1).mean(dim=1)


def signals(logits: torch.Tensor, targets: torch.Tensor, channels: tuple[str, ...], features=None,
                loss: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """Each example's training signals, (B,) each (on text: each example's mean over its tokens):
    "loss" cross-entropy (`loss` if given: the training loss itself); "correct" argmax == target;
    "el2n" ||softmax - onehot||; "grad_norm" the exact norm of the example's gradient w.r.t. the last
    linear layer (weights and bias): with e_t = p_t - y_t and g_t = [h_t, 1] (h: the layer's input,
    `features.value`), it is ||(1/L) sum_t e_t g_t^T||_F, which is ||e|| sqrt(||h||^2 + 1) for one token."""
    n = targets.shape[0]
    out = {"loss": (example_loss(logits, targets) if loss is None else loss).detach()}
    if not set(channels) - {"loss"}:
        return out
    z = logits.detach().float().reshape(-1, logits.shape[-1])
    t = targets.reshape(-1)
    if "correct" in channels:
        out["correct"] = (z.argmax(dim=1) == t).float().view(n, -1).mean(dim=1)
    if "el2n" in channels or "grad_norm" in channels:
        error = z.softmax(dim=1)
        error[torch.arange(len(t), device=t.device), t] -= 1
        if "el2n" in channels:
            out["el2n"] = error.norm(dim=1).view(n, -1).mean(dim=1)
        if "grad_norm" in channels:
            g = features.value.float().reshape(len(t), -1)
            if features.bias:
                g = torch.cat([g, torch.ones(len(t), 1, device=g.device)], dim=1)
            e, g = error.view(n, -1, error.shape[1]), g.view(n, -1, g.shape[1])
            if e.shape[1] == 1:
                out["grad_norm"] = e[:, 0].norm(dim=1) * g[:, 0].norm(dim=1)
            else:  # ||sum_t e_t g_t^T||^2 = sum_{t,s} (e_t . e_s)(g_t . g_s)
                gram = (e @ e.transpose(1, 2)) * (g @ g.transpose(1, 2))
                out["grad_norm"] = gram.sum(dim=(1, 2)).clamp(min=0).sqrt() / e.shape[1]
    return out


class Recorder:
    """Per-example training signals of one window (the warmup, or one interval), one column per epoch,
    one (N, E) matrix per channel, held as one (channels, N + 1, E) tensor so that a batch is one
    scatter and a merge is one collective.

    Entries a process did not record stay NaN (which examples a worker trained on is the samplers'
    to say: samplers.trained). Row N is a sink: keys >= N are padding copies (see
    samplers.WorkerBatches), written there so that padding never counts twice and recording needs no
    boolean mask (which would sync the device).
    """

    def __init__(self, num_examples: int, num_epochs: int, channels: tuple[str, ...], device: torch.device | str):
        assert num_epochs >= 1 and channels and set(channels) <= set(CHANNELS), channels
        self.num_examples, self.channels = num_examples, tuple(channels)
        self.values = torch.full((len(channels), num_examples + 1, num_epochs), float("nan"), device=device)

    @staticmethod
    def nbytes(num_examples: int, num_epochs: int, channels: int) -> int:
        return channels * (num_examples + 1) * num_epochs * 4

    def record(self, keys: torch.Tensor, column: int, signals: dict[str, torch.Tensor]) -> None:
        """Scatter one batch's per-example signals into `column`: a single index_put on the device."""
        rows = torch.where(keys < self.num_examples, keys, self.num_examples)
        self.values[:, rows, column] = torch.stack([signals[c].detach().float() for c in self.channels])

    def restore(self, columns: dict[str, torch.Tensor]) -> None:
        """Put back the first columns of a window from a checkpoint (merged values: one process
        restores them, the others leave theirs empty, so the next merge sums to the same matrix)."""
        for k, c in enumerate(self.channels):
            assert columns[c].shape[0] == self.num_examples and columns[c].shape[1] <= self.values.shape[2]
            self.values[k, : self.num_examples, : columns[c].shape[1]] = columns[c].to(self.values.device)

    def merged(self, columns: int | None = None) -> dict[str, torch.Tensor]:
        """Each channel's N x E matrix (its first `columns` columns): every process's records summed
        with one all_reduce over all channels.

        Each example is recorded by exactly one process per epoch (padding goes to the sink), so
        the sum is that record; an example no process trained on in an epoch reads 0 there, as in
        the paper's code, which summed its workers' zero-initialized matrices."""
        merged = torch.nan_to_num(self.values[:, :, :columns], nan=0.0).contiguous()
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            dist.all_reduce(merged)
        return {c: merged[k, : self.num_examples] for k, c in enumerate(self.channels)}


Window = dict[str, torch.Tensor]  # channel -> (N, E) float32, one column per epoch of the window
History = dict[str, torch.Tensor]  # the run's per-example statistics before scoring (advance): forgetting's counts
Measure = Callable[[Window, History | None], torch.Tensor]
# A measure's channels, tie-break, meaning per task and source are its record in catalog.MEASURES.
MEASURES: dict[str, Measure] = C.Registry(C.MEASURES, "measure")


def average(window: torch.Tensor) -> torch.Tensor:
    """Mean of each row, taken from `torch.var_mean` as the paper's code did: `.mean()` reduces in
    another order (up to about 5e-7 apart on 15 float32 columns), enough to swap near-tied examples.
    A one-column mean is that column exactly (as var_mean gives it, without its zero-dof warning)."""
    if window.shape[1] == 1:
        return window[:, 0].clone()
    return torch.var_mean(window, dim=1)[1]


def variance(window: torch.Tensor) -> torch.Tensor:
    """Unbiased variance of each row (`torch.var_mean`, as the paper's code). With one column it falls
    back to the average, as the paper's code did: with E_interval = 1, every repartition after the
    first is by average loss."""
    if window.shape[1] == 1:
        return average(window)
    return torch.var_mean(window, dim=1, correction=1)[0]


@MEASURES.register("average")
def average_loss(window: Window, history: History | None) -> torch.Tensor:
    return average(window["loss"])


@MEASURES.register("variance")
def loss_variance(window: Window, history: History | None) -> torch.Tensor:
    return variance(window["loss"])


def probability(window: Window) -> torch.Tensor:
    """p = exp(-loss): the probability of the true class (on text, exp(-mean token loss) is the
    geometric mean of the chunk's true-token probabilities)."""
    return torch.exp(-window["loss"])


def advance(history: History | None, window: Window) -> History:
    """The run's per-example statistics after `window` (all its columns, the ignored epochs too): for
    the "correct" channel, the forgetting events so far (a 1 -> 0 transition between two consecutive
    presentations, across window boundaries), whether the example was ever learned, its last
    correctness, and the presentations (epochs) so far. Toneva et al.'s counts are over the whole
    training, not one window; the checkpoint carries this, so a resumed run counts the same."""
    if "correct" not in window:
        return history
    correct = window["correct"] > 0.5
    if history is not None:
        correct = torch.cat([history["last"][:, None], correct], dim=1)
        events, learned, presentations = history["events"], history["learned"], history["presentations"]
    else:
        events = torch.zeros(len(correct), device=correct.device)
        learned = torch.zeros(len(correct), dtype=torch.bool, device=correct.device)
        presentations = torch.zeros((), device=correct.device)
    return {"events": events + (correct[:, :-1] & ~correct[:, 1:]).sum(dim=1), "learned": learned | correct.any(dim=1),
            "last": correct[:, -1], "presentations": presentations + window["correct"].shape[1]}


@MEASURES.register("forgetting")
def forgetting(window: Window, history: History | None) -> torch.Tensor:
    """Forgetting events over the whole run so far (Toneva et al., An Empirical Study of Example
    Forgetting during Deep Neural Network Learning, ICLR 2019; their compute_forgetting_statistics and
    sort_examples_by_forgetting): the number of 1 -> 0 transitions of the example's correctness
    between consecutive epochs; an example never learned scores the number of presentations, the most
    it could have been forgotten, as in their code. `history` is `advance` after this window (None:
    the run began with this window)."""
    history = history or advance(None, window)
    return torch.where(history["learned"], history["events"], history["presentations"]).float()


@MEASURES.register("confidence")
def confidence(window: Window, history: History | None) -> torch.Tensor:
    """1 - mean_t p_t, p = exp(-loss): low confidence in the true class ranks first. Dataset
    cartography's confidence is mean p (Swayamdipta et al., Dataset Cartography, EMNLP 2020)."""
    return 1 - probability(window).mean(dim=1)


@MEASURES.register("variability")
def variability(window: Window, history: History | None) -> torch.Tensor:
    """sqrt(mean_t (p_t - mean p)^2), p = exp(-loss): the population standard deviation (ddof 0, as
    their code) of dataset cartography's variability (Swayamdipta et al., EMNLP 2020). Zero for every
    example at E = 1, so the order is then by average loss (the tie-break)."""
    return torch.std(probability(window), dim=1, correction=0)


@MEASURES.register("ab-variance")
def ab_variance(window: Window, history: History | None) -> torch.Tensor:
    """sqrt(var p + (var p)^2 / (E - 1)), var unbiased, p = exp(-loss): active bias's prediction
    variance plus its confidence term (Chang et al., Active Bias: Training More Accurate Neural
    Networks by Emphasizing High Variance Samples, NeurIPS 2017, eq. 4 with |H| = E). At E = 1 the
    unbiased variance is undefined: the score is 0 for every example, so the order is by average loss
    (the tie-break), as the paper's `variance` falls back to the average at E = 1."""
    p = probability(window)
    epochs = p.shape[1]
    if epochs == 1:
        return torch.zeros_like(p[:, 0])
    var = torch.var(p, dim=1, correction=1)
    return torch.sqrt(var + var**2 / (epochs - 1))


@MEASURES.register("ab-closeness")
def ab_closeness(window: Window, history: History | None) -> torch.Tensor:
    """mean p * (1 - mean p), p = exp(-loss): active bias's threshold closeness (Chang et al.,
    NeurIPS 2017), largest for examples whose true class hovers around probability 1/2."""
    mean = probability(window).mean(dim=1)
    return mean * (1 - mean)


@MEASURES.register("el2n")
def el2n(window: Window, history: History | None) -> torch.Tensor:
    """mean_t ||softmax(logits_t) - onehot(label)||_2 over the window's epochs (the "el2n" channel):
    the EL2N score (Paul et al., Deep Learning on a Data Diet, NeurIPS 2021), averaged over the
    window's epochs of one run instead of over several runs early in training."""
    return window["el2n"].mean(dim=1)


@MEASURES.register("grad-norm")
def grad_norm(window: Window, history: History | None) -> torch.Tensor:
    """mean_t ||p_t - y|| * sqrt(||h_t||^2 + 1) (the "grad_norm" channel): the exact norm of the
    example's loss gradient w.r.t. the last linear layer's weight and bias (z = W h + b, so
    dL/dW = (p - y) h^T and dL/db = p - y), averaged over the window: a cheap proxy of GraNd, the
    norm of the gradient w.r.t. all weights (Paul et al., NeurIPS 2021).

    Katharopoulos & Fleuret (Not All Samples Are Created Equal, ICML 2018) bound the full gradient
    norm by a constant times the norm of the gradient w.r.t. the last layer's pre-activation outputs,
    which for softmax cross-entropy is ||p - y||, i.e. EL2N; this measure multiplies that bound by
    the exact weight-gradient factor sqrt(||h||^2 + 1), so it is the last layer's part of the full
    gradient norm (a lower bound of it), not an upper bound."""
    return window["grad_norm"].mean(dim=1)


@MEASURES.register("dd-el2n")
def dd_el2n(window: Window, history: History | None) -> torch.Tensor:
    """EL2N as Data Diet scores it: the scoring pass's one column (tasks.Task.score)."""
    return window["eval_el2n"][:, 0]


@MEASURES.register("dd-grand")
def dd_grand(window: Window, history: History | None) -> torch.Tensor:
    """GraNd as Data Diet scores it: the scoring pass's one column (tasks.Task.score)."""
    return window["eval_grand"][:, 0]


MEASURES.complete()


def channels(measure: str) -> tuple[str, ...]:
    """What a run must record for `measure` from its training pass: its own and its tie-break's."""
    record = C.MEASURES[measure]
    own = tuple(c for c in record.channels if c in CHANNELS)
    return tuple(dict.fromkeys(own + (channels(record.tiebreak) if record.tiebreak else ())))


def scored(measure: str) -> tuple[str, ...]:
    """What a scoring pass must compute for `measure` at each window's start (none for most)."""
    return tuple(c for c in C.MEASURES[measure].channels if c in SCORED)


def order(scores: torch.Tensor, secondary: torch.Tensor | None = None) -> torch.Tensor:
    """Example indices, most important first (descending, as the paper's code sorted); equal scores
    by `secondary` (descending), then by index. Stable sorts only, so every process derives the same
    order from the same scores. Without `secondary` it is the paper's single stable sort."""
    if secondary is None:
        return torch.sort(scores, descending=True, stable=True).indices
    by_secondary = torch.sort(secondary, descending=True, stable=True).indices
    return by_secondary[torch.sort(scores[by_secondary], descending=True, stable=True).indices]


def rank(name: str, window: Window, history: History | None) -> tuple[torch.Tensor, torch.Tensor]:
    """(scores, order) of the examples by measure `name` over `window` (history: the run's statistics
    after it, `advance`); equal scores ordered by the measure's tie-break measure, then by index."""
    missing = set(C.MEASURES[name].channels) - window.keys()
    assert not missing, f"measure {name} reads channels {sorted(missing)}, which were not recorded"
    scores = MEASURES[name](window, history)
    assert scores.shape == window["loss"].shape[:1]
    tiebreak = C.MEASURES[name].tiebreak
    return scores, order(scores, None if tiebreak is None else MEASURES[tiebreak](window, history))
