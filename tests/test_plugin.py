"""The plug-in (importance_dpt) for users' own loops: the same partitions as dpt.py from the same
per-example losses (one rank, and two under torchrun), one clear error per bad input, a state that
resumes to the same partitions, and the examples: a plain DDP script run from a fresh virtual
environment that pip installed the clone, and the same loop under Hugging Face Accelerate."""
import subprocess
import sys

import pytest
import torch

import dpt
import fakedata
import importance
from importance_dpt import ImportanceAware, PlanError
from runs import ENV, REPO, TINY, only

N = 40


def plan(**change) -> ImportanceAware:
    return ImportanceAware(range(N), **{"epochs": 6, "warmup": 2, "interval": 2, "ignore": 0} | change)


def run_through(p: ImportanceAware, epochs: range, loss_of) -> list:
    """The plan's partitions (as lists) at each interval's start, training on loss_of(epoch, keys)."""
    seen = []
    for epoch in epochs:
        p.sampler.set_epoch(epoch)
        if p.window.first_epoch == epoch and p.window.index:
            seen.append([part.tolist() for part in p.partition])
        keys = torch.tensor(list(p.sampler))
        p.update(loss_of(epoch, keys), keys)
    return seen


def losses(epoch, keys):
    return torch.sin(keys.float() * (epoch + 1.7)) + 1.5


@pytest.mark.parametrize("bad,says", [
    (lambda p: p.update(torch.tensor(1.0), torch.tensor(3)), "one loss per example, shape (B,), not (): compute it "
                                                               "with reduction='none'"),
    (lambda p: p.update(torch.rand(4), torch.rand(4)), "as an integer tensor"),
    (lambda p: p.update(torch.rand(4), torch.tensor([0, 1, 2])), "as an integer tensor of the loss's shape (4,)"),
    (lambda p: p.update(torch.rand(2), torch.tensor([0, 2 * N])), f"index outside 0..{2 * N - 1}"),
    (lambda p: p.update(torch.rand(2), torch.tensor([0, -1])), "index outside"),
], ids=["a mean loss", "float indices", "index of another shape", "index beyond the data", "negative index"])
def test_a_bad_update_is_one_clear_error(bad, says):
    p = plan()
    p.sampler.set_epoch(0)
    with pytest.raises(PlanError, match=says.replace("(", r"\(").replace(")", r"\)")):
        bad(p)


@pytest.mark.parametrize("change,says", [
    ({"measure": "dd-el2n"}, "scores every example in a pass of its own"),
    ({"measure": "grad-norm"}, "reads the last layer's input"),
    ({"heuristic": "class-stripes"}, "reads each example's class: pass labels= as (40,) integers, not None"),
    ({"heuristic": "class-stripes", "labels": torch.zeros(39, dtype=torch.int64)}, "not (39,)"),
    ({"heuristic": "class-stripes", "labels": torch.zeros(N)}, "must be integer classes"),
    ({"measure": "no-such-measure"}, "measure 'no-such-measure' is not one of"),
    ({"warmup": 0}, "the schedule needs 0 <= ignore < warmup < epochs"),
    ({"interval": 9}, "1 <= interval <= epochs - warmup"),
    ({"epochs": 0}, "epochs must be at least 1, not 0"),
], ids=["a scoring pass", "the head's input", "no labels", "labels of another shape", "float labels",
        "unknown measure", "no warmup", "too long an interval", "no epochs"])
def test_a_plan_that_cannot_work_is_refused_up_front(change, says):
    with pytest.raises(PlanError, match=says.replace("(", r"\(").replace(")", r"\)")):
        plan(**change)


def test_epochs_go_in_order_and_a_measure_reading_logits_needs_them():
    p = plan()
    with pytest.raises(PlanError, match="update\\(\\) before the first epoch"):
        p.update(torch.rand(2), torch.tensor([0, 1]))
    run_through(p, range(3), losses)
    with pytest.raises(PlanError, match="set_epoch\\(1\\) after epoch 2: call it for every epoch"):
        p.sampler.set_epoch(1)
    with pytest.raises(PlanError, match="set_epoch\\(5\\) after epoch 2"):
        p.sampler.set_epoch(5)
    forgetting = plan(measure="forgetting")
    forgetting.sampler.set_epoch(0)
    with pytest.raises(PlanError, match="reads correct, which update\\(\\) computes from the batch's logits"):
        forgetting.update(torch.rand(2), torch.tensor([0, 1]))
    logits, targets = torch.randn(2, 3), torch.tensor([0, 2])
    assert forgetting.update(torch.rand(2), torch.tensor([0, 1]), logits, targets).dim() == 0


def test_the_mean_is_returned_and_padding_copies_are_not_recorded():
    p = ImportanceAware(range(7), epochs=4, warmup=2, interval=1, ignore=0, batch_size=4)
    p.sampler.set_epoch(0)
    keys = torch.tensor(list(p.sampler))
    assert keys.max() < 7 and len(keys) == 7  # one rank: its slice is the whole set, no padding
    loss = torch.arange(7.0)
    assert p.update(loss, keys) == loss.mean()
    assert torch.equal(p.recorder.merged()["loss"][keys, 0], loss)


def test_a_padding_copy_is_trained_on_but_not_recorded_again():
    """An interval's fixed partition of 7 in batches of 3 would end in a batch of one: the sampler pads it
    with a copy (key index + N), whose loss counts in the mean but never overwrites the example's record."""
    p = ImportanceAware(range(7), epochs=4, warmup=2, interval=1, ignore=0, batch_size=3)
    run_through(p, range(2), losses)
    p.sampler.set_epoch(2)
    keys = torch.tensor(list(p.sampler))
    padded = keys[keys >= 7]
    assert len(keys) == 8 and len(padded) == 1 and sorted(keys[keys < 7].tolist()) == list(range(7))
    loss = keys.float() * 10  # a copy's loss differs from its example's
    assert p.update(loss, keys) == loss.mean()
    assert torch.equal(p.recorder.merged()["loss"][:, 0], torch.arange(7.0) * 10)


@pytest.mark.parametrize("stop", [1, 2, 3], ids=["at the warmup's end", "inside an interval", "at an interval's end"])
@pytest.mark.parametrize("measure", ["variance", "forgetting"])
def test_a_plan_resumed_from_a_saved_file_continues_to_the_same_partitions(tmp_path, stop, measure):
    """Saved after any epoch (a window's records half filled, or full and not yet scored; forgetting's
    counts carried across windows) and loaded from a file: the same partitions as a run never stopped."""
    def step(p, epoch, keys):
        logits = torch.stack([torch.sin(keys * (epoch + 1.3)), torch.cos(keys * 0.7)], dim=1)
        return p.update(losses(epoch, keys), keys, logits, keys % 2)

    def through(p, epochs):
        seen = []
        for epoch in epochs:
            p.sampler.set_epoch(epoch)
            if p.window.first_epoch == epoch and p.window.index:
                seen.append([part.tolist() for part in p.partition])
            step(p, epoch, torch.tensor(list(p.sampler)))
        return seen

    def make():  # windows 0-1 (warmup), 2-3, 4-5, 6-7
        return plan(measure=measure, epochs=8)

    whole = through(make(), range(8))
    first = make()
    before = through(first, range(stop + 1))
    torch.save(first.state_dict(), tmp_path / "plan.pt")
    again = make()
    again.load_state_dict(torch.load(tmp_path / "plan.pt", weights_only=True))
    assert before + through(again, range(stop + 1, 8)) == whole and len(whole) == 3


def test_a_resumed_plan_continues_to_the_same_partitions():
    whole = run_through(plan(), range(6), losses)
    first = plan()
    assert run_through(first, range(3), losses) == whole[:1]
    state = first.state_dict()
    again = plan()
    again.load_state_dict(state)
    assert run_through(again, range(3, 6), losses) == whole[1:] and len(whole) == 2
    with pytest.raises(PlanError, match="belongs to another plan \\(policy differ\\)"):
        plan(measure="average").load_state_dict(state)
    with pytest.raises(PlanError, match="belongs to another plan \\(windows differ\\)"):
        plan(epochs=7).load_state_dict(state)
    with pytest.raises(PlanError, match="not a plan's state_dict \\(no windows, recorded\\)"):
        plan().load_state_dict({k: v for k, v in state.items() if k not in ("windows", "recorded")})


def record_dpt(root, tmp_path, workers: int, measure: str, heuristic: str, monkeypatch) -> tuple[dict, list]:
    """dpt.py's run of TINY on 67 examples, in this process, with every recorded loss captured:
    (the plan and the (epochs, N) losses for the replay, the partitions it saved)."""
    captured = {}
    record = importance.Recorder.record

    def capture(self, keys, column, signals):
        batch = (keys.clone(), signals["loss"].detach().clone())
        captured.setdefault(id(self), {}).setdefault(column, []).append(batch)
        return record(self, keys, column, signals)
    monkeypatch.setattr(importance.Recorder, "record", capture)
    out = tmp_path / f"res{workers}"
    emulate = ["--emulate-workers", str(workers)] if workers > 1 else []
    dpt.main([*TINY, "--data-dir", str(root), "--results-dir", str(out), "--save-partitions", "--measure", measure,
              "--heuristic", heuristic, *emulate])
    monkeypatch.undo()
    matrix = torch.zeros(4, 67)
    first = 0
    for window in captured.values():  # in the order the windows began
        for column, batches in sorted(window.items()):
            for keys, loss in batches:
                matrix[first + column][keys[keys < 67]] = loss[keys < 67]
        first += len(window)
    saved = torch.load(only(out, "logs/*.partitions.pt"), weights_only=False)
    plan_args = {"epochs": 4, "warmup": 2, "interval": 1, "ignore": 1, "measure": measure, "heuristic": heuristic,
                 "seed": 17611, "batch_size": 10}
    return {"plan": plan_args, "losses": matrix}, [w["partition"] for w in saved["windows"]]


@pytest.mark.slow
@pytest.mark.parametrize("workers", [1, 2])
@pytest.mark.parametrize("measure,heuristic", [("variance", "stripes"), ("average", "sticky-stripes")])
def test_the_plugin_partitions_as_dpt_from_the_same_losses(cifar10_dir, tmp_path, monkeypatch, workers, measure,
                                                            heuristic):
    """dpt.py's recorded losses replayed through the plug-in (one rank here; two under torchrun,
    gloo): every window's partition equal to the one dpt.py saved."""
    root, _ = cifar10_dir
    replay, expected = record_dpt(root, tmp_path, workers, measure, heuristic, monkeypatch)
    torch.save(replay, tmp_path / "losses.pt")
    launch = [sys.executable] if workers == 1 else [sys.executable, "-m", "torch.distributed.run", "--standalone",
                                                    f"--nproc_per_node={workers}"]
    proc = subprocess.run([*launch, str(REPO / "tests" / "replay_plugin.py"), str(tmp_path / "losses.pt"),
                           str(tmp_path / "got.pt")], cwd=tmp_path, env=ENV, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = torch.load(tmp_path / "got.pt", weights_only=False)
    assert len(got) == len(expected) == 3 and got[0] is None and expected[0] is None
    for mine, theirs in zip(got[1:], expected[1:]):
        assert [p.tolist() for p in mine] == [p.tolist() for p in theirs]


def idx_folder(tmp_path):
    """torchvision's FashionMNIST/raw: the real images (Debian's) if there, else tiny ones in the format."""
    import gzip

    raw = tmp_path / "data" / "FashionMNIST" / "raw"
    source = fakedata.REAL_FASHION_MNIST if (fakedata.REAL_FASHION_MNIST / "train-images-idx3-ubyte.gz").exists() \
        else None
    if source is None:
        fakedata.write_fashion_mnist(tmp_path / "gz", 600, 200)
        source = tmp_path / "gz"
    raw.mkdir(parents=True)
    for gz in source.glob("*.gz"):
        (raw / gz.name.removesuffix(".gz")).write_bytes(gzip.decompress(gz.read_bytes()))
    return tmp_path / "data"


@pytest.mark.slow
def test_a_fresh_environment_pip_installs_the_clone_and_runs_the_ddp_example_on_two_ranks(tmp_path):
    """No PYTHONPATH, not run from the clone: the example imports the installed package. torch comes
    from this environment (a .pth file), so only the clone is installed."""
    import site

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    purelib = subprocess.run([str(venv / "bin" / "python"), "-c", "import sysconfig; print(sysconfig.get_path("
                              "'purelib'))"], capture_output=True, text=True, check=True).stdout.strip()
    (tmp_path / "venv" / purelib.split(str(venv) + "/")[1] / "borrowed-torch.pth").write_text(
        site.getsitepackages()[0] + "\n")
    pip = subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "--no-deps", str(REPO)],
                         capture_output=True, text=True, timeout=600)
    assert pip.returncode == 0, pip.stderr[-3000:]
    installed = subprocess.run([str(venv / "bin" / "python"), "-c", "import importance_dpt, sys; "
                                "print(importance_dpt.__file__, sorted(set(sys.modules) & {'catalog', 'data', "
                                "'models', 'train', 'results'}))"], cwd=tmp_path, capture_output=True, text=True)
    assert installed.stdout.startswith(str(venv)) and installed.stdout.strip().endswith("[]"), installed
    env = {k: v for k, v in ENV.items() if k != "PYTHONPATH"}
    run = subprocess.run([str(venv / "bin" / "python"), "-m", "torch.distributed.run", "--standalone",
                          "--nproc_per_node=2", str(REPO / "examples" / "ddp_fashionmnist.py"), "--data-dir",
                          str(idx_folder(tmp_path)), "--subset", "600", "--epochs", "3", "--warmup", "2",
                          "--interval", "1"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "epoch 3: interval 1, test accuracy" in run.stdout


@pytest.mark.slow
def test_the_accelerate_example_runs_on_two_processes(tmp_path):
    run = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                          str(REPO / "examples" / "accelerate_fashionmnist.py"), "--data-dir",
                          str(idx_folder(tmp_path)), "--subset", "600", "--epochs", "3", "--warmup", "2",
                          "--interval", "1"], cwd=tmp_path, env=ENV, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "epoch 3: test accuracy" in run.stdout
