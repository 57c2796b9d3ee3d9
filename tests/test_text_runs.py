"""Language modelling through the whole pipeline: the recorded per-chunk loss, the fused and sequential
emulations and 2-rank torchrun, a 3-epoch run whose held-out perplexity falls, checkpoint/resume,
and the CPU-sized --study lm through report and notebook."""
import copy
import shutil
import subprocess
import sys

import nbformat
import pandas as pd
import pytest
import torch
from nbclient import NotebookClient

import fakedata
import importance
import lm
import report
import tasks
import text
import train
import workload
from runs import REPO, checkpoint, inprocess, launch, only, only_log, partitions, study
from samplers import WorkerBatches, for_window
from test_checkpoint import die_at

KJV = shutil.which("bible") is not None


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    path = tmp_path_factory.mktemp("text") / "corpus.txt"
    fakedata.write_text(path, lines=2000)
    return path


def flags(corpus, out, *extra):
    return ["--dataset", "text", "--text-file", str(corpus), "--seq-len", "32", "--subset", "120",
            "--test-subset", "40", "--batch-size", "12", "--total-epochs", "3", "--warmup-epochs", "2",
            "--interval-epochs", "1", "--ignore-epochs", "1", "--optimizer", "adamw", "--lr", "0.01",
            "--weight-decay", "0.1", "--results-dir", str(out), "--seed", "64937", *extra]


@pytest.mark.parametrize("model", ["gpt", "lstm"])
def test_the_recorded_loss_is_each_chunks_cross_entropy(corpus, model):
    """One step from known parameters: the recorder holds exactly lm.per_chunk_loss of every chunk."""
    split = text.load(str(corpus), corpus.parent, 16, train=True, subset=24)
    torch.manual_seed(0)
    net = lm.build(model, text.VOCAB, 16, dropout=0.0)
    before = copy.deepcopy(net)
    step = train.Step.build(workers=2, batch_size=12, device=torch.device("cpu"), task=tasks.of("text"), on_device=True,
                            channels=("loss",))
    batches = WorkerBatches(for_window(split, None, range(2), 2, shuffle=True, sampler_seed=0, seed=0), 12)
    recorder = importance.Recorder(len(split), 1, ("loss",), "cpu")
    train.train_epoch(net, torch.optim.AdamW(net.parameters()), batches, split, step, 0, recorder, 0)
    with torch.no_grad():
        expected = lm.per_chunk_loss(before, split.tokens)
    assert torch.allclose(recorder.merged()["loss"][:, 0], expected, rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_fused_sequential_and_two_rank_torchrun_record_the_same_losses(corpus, tmp_path):
    """No BatchNorm in a language model: the three ways to run 2 workers agree up to rounding."""
    recorded = {}
    for name, nproc, extra in (("fused", None, ["--emulate-workers", "2"]),
                               ("sequential", None, ["--emulate-workers", "2", "--emulation", "sequential"]),
                               ("torchrun", 2, [])):
        argv = flags(corpus, tmp_path / name, "--heuristic", "none", "--total-epochs", "1", "--checkpoint-every", "1",
                     "--keep-checkpoint", "--deterministic", *extra)
        launch(argv, nproc) if nproc else inprocess(argv)
        recorded[name] = checkpoint(tmp_path / name)["recorded"]["loss"]
    assert (recorded["fused"] > 0).all()
    assert torch.allclose(recorded["fused"], recorded["sequential"], rtol=1e-4, atol=1e-5)
    assert torch.allclose(recorded["sequential"], recorded["torchrun"], rtol=1e-4, atol=1e-5)


@pytest.mark.slow
def test_a_two_rank_torchrun_run_records_every_chunk_and_perplexity_falls(corpus, tmp_path):
    proc = launch(flags(corpus, tmp_path, "--save-partitions"), 2)
    assert "held-out" in proc.stdout and "bpb" in proc.stdout
    folder = tmp_path / "Text-GPT-Stripes-Variance"
    log = only_log(folder)
    perplexity = [e["perplexity"] for e in log["epochs"]]
    assert perplexity[2] < perplexity[0], perplexity
    saved = partitions(folder)
    warmup, *intervals = saved["windows"]
    assert set(torch.cat(warmup["trained"]).tolist()) == set(range(120))  # every chunk recorded (random slices)
    for window in intervals:  # fixed partitions: every chunk by exactly one rank
        assert sorted(torch.cat(window["trained"]).tolist()) == list(range(120))
    row = pd.read_csv(only(folder, "W2-INT1-IGN1-N2.csv")).iloc[0]
    assert row.best_bits_per_byte == min(row[f"epoch_{e}"] for e in (1, 2, 3))
    assert (row.dataset, row.model) == ("text", "gpt")
    assert abs(row.epoch_3 - log["epochs"][2]["bits_per_byte"]) < 1e-4


@pytest.mark.slow
def test_a_killed_text_run_resumes_to_the_same_row(corpus, tmp_path):
    inprocess(flags(corpus, tmp_path / "whole", "--emulate-workers", "2"))
    argv = flags(corpus, tmp_path / "killed", "--emulate-workers", "2", "--checkpoint-every", "1")
    die_at("train.train_epoch", 3, argv)
    inprocess(argv + ["--resume"])
    whole, killed = (pd.read_csv(only(tmp_path / name, "*.csv")) for name in ("whole", "killed"))
    pd.testing.assert_frame_equal(whole, killed)


@pytest.fixture(scope="module")
def lm_study(tmp_path_factory, corpus):
    out = tmp_path_factory.mktemp("lm") / "results"
    data_dir = corpus.parent
    source = [] if KJV else ["--dataset", "text"]  # the KJV when Debian's bible-kjv is there, else the test corpus
    return study(["--study", "lm", *source, "--epochs", "3", "--warmups", "2", "--intervals", "1", "--seeds", "1", "2",
                  "--gpus", "0", "--results-dir", str(out), "--", "--subset", "150", "--test-subset", "40",
                  "--batch-size", "12", "--seq-len", "32", "--data-dir", str(data_dir),
                  *([] if KJV else ["--text-file", str(corpus)])])


@pytest.mark.slow
def test_the_lm_study_goes_through_report_and_notebook(lm_study, tmp_path, monkeypatch):
    runs, problems = report.load_runs(lm_study)
    arms = len(workload.STUDIES["lm"].variants) + 1  # the study's arms and the vanilla baseline
    assert problems == [] and len(runs) == 2 * arms  # 2 seeds
    assert not runs.higher_is_better.any()
    shown = subprocess.run([sys.executable, "report.py", str(lm_study), "--paper", ""], cwd=REPO, capture_output=True,
                           text=True)
    assert shown.returncode == 0 and "best held-out bits per byte (lower is better)" in shown.stdout
    assert "### Across measures:" in shown.stdout and "### Across heuristics:" in shown.stdout
    monkeypatch.setenv("DPT_RESULTS", str(lm_study))
    monkeypatch.setenv("DPT_FIGURES", str(tmp_path))
    notebook = nbformat.read(REPO / "plots.ipynb", as_version=4)
    NotebookClient(notebook, timeout=900, kernel_name="python3", resources={"metadata": {"path": str(REPO)}}).execute()
    drawn = {p.name for p in tmp_path.iterdir()}
    assert "figure5.png" in drawn and any(n.startswith("study-measures-") for n in drawn)
