"""Pins on the paper's code's behaviour (/work/shared/reference/paper-code-facts.md): each test here
fails if one of the paper's choices that changes results is dropped: E_ignore at the first
repartition only, the evaluation protocol, the shuffle seeds, `torch.var_mean`, the optimizer, the
normalization constants and the models as the paper's code built them."""
import random

import pytest
import torch
import torchvision
from torch import nn

import augment
import catalog
import data
import flags
import importance
import models
import schedule
import tasks
import train
from samplers import ConstantSampler


# ---- importance: var_mean, and E_ignore at the first repartition only -------------------------

def test_average_and_variance_are_torch_var_mean_bit_for_bit():
    g = torch.Generator().manual_seed(0)
    window = torch.rand(50_000, 15, generator=g) * 3
    variance, mean = torch.var_mean(window, dim=1)
    assert torch.equal(importance.average(window), mean)
    assert torch.equal(importance.variance(window), variance)
    assert not torch.equal(window.mean(dim=1), mean)  # why it matters: .mean() rounds differently


class FixedRecorder:
    """Stands in for the recorder: merged() returns a fixed window of losses."""

    def __init__(self, values: torch.Tensor):
        self.values = values

    def merged(self) -> dict:
        return {"loss": self.values}


@pytest.mark.parametrize("measure", ["average", "variance"])
def test_ignore_epochs_apply_to_the_first_repartition_only(measure):
    g = torch.Generator().manual_seed(1)
    window = torch.rand(40, 6, generator=g)
    window[:, :2] += torch.linspace(50, 0, 40)[:, None] * torch.rand(40, 2, generator=g)  # the ignored columns dominate
    args = flags.parse_args(["--measure", measure, "--ignore-epochs", "2", "--warmup-epochs", "6"])
    score = importance.average if measure == "average" else importance.variance
    policy = schedule.Policy.of(args)
    first = schedule.repartition(FixedRecorder(window), schedule.Window(1, 6, 5), None, policy, 4).scores
    later = schedule.repartition(FixedRecorder(window), schedule.Window(2, 11, 5), None, policy, 4).scores
    assert torch.equal(first, score(window[:, 2:]))
    assert torch.equal(later, score(window))
    assert not torch.equal(importance.order(first), importance.order(later))


# ---- the evaluation protocol ------------------------------------------------------------------

class Spy(nn.Module):
    """Records what evaluation feeds the model and the state of its BatchNorm."""

    def __init__(self):
        super().__init__()
        self.bn = nn.BatchNorm2d(3)
        self.calls = []

    def forward(self, x):
        self.calls.append((x.clone(), self.bn.training, self.bn.track_running_stats))
        self.bn(x)
        return torch.zeros(len(x), 10)


def test_the_paper_protocol_is_the_default():
    assert flags.parse_args([]).eval_protocol == "paper"


def test_paper_protocol_evaluates_augmented_images_with_batch_statistics():
    spec, task = catalog.DATASETS["cifar10"], tasks.of("cifar10")
    g = torch.Generator().manual_seed(2)
    test = data.Split(
        torch.randint(0, 256, (30, 3, 32, 32), dtype=torch.uint8, generator=g), torch.zeros(30, dtype=torch.int64)
    )
    step = train.Step.build(
        workers=1, batch_size=16, device=torch.device("cpu"), task=task, seed=5, eval_protocol="paper"
    )
    model = Spy().eval()
    before = model.bn.running_mean.clone()
    assert task.evaluate(model, test, step, 3) == {"test_accuracy": 100.0}
    assert [len(x) for x, _, _ in model.calls] == [16, 14]
    for (x, training, tracking), start in zip(model.calls, (0, 16)):
        index = torch.arange(start, start + len(x))
        expected = augment.augment(
            test.images[index], index, 5, 3, augment.TEST, spec.mean, spec.std, spec.crop_padding
        )
        assert torch.equal(x, expected)  # the training augmentation, keyed by the test stream
        assert training and not tracking  # batch statistics, running buffers untouched
    assert torch.equal(model.bn.running_mean, before) and not model.training  # the model's mode is restored

    model.calls.clear()
    task.evaluate(model, test, train.Step.build(workers=1, batch_size=16, device=torch.device("cpu"), task=task), 3)
    x, training, _ = model.calls[0]
    assert not training and torch.equal(x, augment.normalize(test.images[:16], spec.mean, spec.std))


# ---- the samplers' seeds ---------------------------------------------------------------------

def test_fixed_partitions_are_shuffled_from_the_runs_seed_as_the_papers_code():
    parts = [torch.arange(0, 100, 2), torch.arange(1, 100, 2)]
    args = flags.parse_args(["--seed", "74606", "--sampler-seed", "3"])
    warmup = schedule.worker_samplers(range(100), None, range(2), 2, schedule.Policy.of(args))
    after = schedule.worker_samplers(range(100), parts, range(2), 2, schedule.Policy.of(args))
    assert all(type(s) is torch.utils.data.DistributedSampler and s.seed == 3 for s in warmup)
    for w, s in enumerate(after):
        assert isinstance(s, ConstantSampler)
        s.set_epoch(21)
        expected = parts[w].tolist()
        random.seed(74606 + 21)  # the paper's code, verbatim in effect
        random.shuffle(expected)
        assert list(s) == expected


# ---- the optimizer, the data's normalization, the models ---------------------------------------

def test_the_optimizer_is_nesterov_sgd_with_the_papers_settings():
    args = flags.parse_args([])
    model = nn.Linear(3, 2)
    opt = models.optimizer(model, args.lr, args.momentum, args.weight_decay)
    group = opt.param_groups[0]
    assert type(opt) is torch.optim.SGD
    assert (group["lr"], group["momentum"], group["weight_decay"], group["nesterov"], group["dampening"]) == (
        0.1,
        0.9,
        5e-4,
        True,
        0,
    )
    # two steps against the textbook update: g += wd*w; b = mu*b + g; w -= lr*(g + mu*b)
    w = model.weight.detach().double().clone()
    b = torch.zeros_like(w)
    for _ in range(2):
        opt.zero_grad()
        model(torch.ones(1, 3)).sum().backward()
        grad = model.weight.grad.double() + 5e-4 * w
        b = 0.9 * b + grad
        w = w - 0.1 * (grad + 0.9 * b)
        opt.step()
    assert torch.allclose(model.weight.double(), w, atol=1e-6)


def test_normalization_constants_are_the_published_ones():
    # the values in the paper's code (CIFAR's widely copied per-channel std, and MNIST's 0.1307/0.3081)
    D = catalog.DATASETS
    assert D["cifar10"].mean == D["cifar100"].mean == (0.4914, 0.4822, 0.4465)
    assert D["cifar10"].std == D["cifar100"].std == (0.2023, 0.1994, 0.2010)
    assert (D["fashionmnist"].mean, D["fashionmnist"].std) == ((0.1307,), (0.3081,))
    assert [D[d].crop_padding for d in ("cifar10", "cifar100", "fashionmnist")] == [4, 4, 0]


@pytest.mark.parametrize("name,blocks", [("resnet18", [2, 2, 2, 2]), ("resnet34", [3, 4, 6, 3])])
def test_models_are_torchvision_resnets_with_the_imagenet_stem(name, blocks):
    model = models.build(name, num_classes=100, channels=3)
    assert [len(getattr(model, f"layer{i}")) for i in range(1, 5)] == blocks
    c = model.conv1
    assert (c.in_channels, c.out_channels, c.kernel_size, c.stride, c.padding, c.bias) == (
        3,
        64,
        (7, 7),
        (2, 2),
        (3, 3),
        None,
    )
    assert isinstance(model.maxpool, nn.MaxPool2d) and model.maxpool.kernel_size == 3 and model.maxpool.stride == 2
    assert (model.fc.in_features, model.fc.out_features) == (512, 100) and model.fc.bias is not None
    gray = models.build(name, num_classes=10, channels=1).conv1
    assert (gray.in_channels, gray.out_channels, gray.kernel_size, gray.stride, gray.padding, gray.bias) == (
        1,
        64,
        (7, 7),
        (2, 2),
        (3, 3),
        None,
    )


def test_initial_weights_follow_the_papers_construction_order():
    """The paper's code replaced conv1 before fc: for a seed, those layers' initial weights depend on it."""
    torch.manual_seed(8271)
    expected = torchvision.models.resnet18(weights=None)
    expected.conv1 = nn.Conv2d(1, 64, kernel_size=7, stride=2, padding=3, bias=False)
    expected.fc = nn.Linear(512, 10)
    torch.manual_seed(8271)
    got = models.build("resnet18", 10, 1)
    for name, tensor in expected.state_dict().items():
        assert torch.equal(got.state_dict()[name], tensor), name


@pytest.mark.parametrize("dataset,model", [("cifar10", "resnet18"), ("fashionmnist", "resnet18"),
                                           ("cifar100", "resnet34"), ("fashionmnist", "lenet5")])
def test_the_parameter_count_the_checks_use_is_the_models(dataset, model):
    """Counted on the meta device: the same count as the built model, and no random draw taken."""
    args = flags.parse_args(["--dataset", dataset, "--model", model])
    task = tasks.of(dataset)
    before = torch.get_rng_state()
    counted = models.parameters(model, args, task.shape(None))
    assert torch.equal(torch.get_rng_state(), before)
    assert counted == sum(p.numel() for p in task.build_model(args, None).parameters())
