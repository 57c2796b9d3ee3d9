"""Recommendation (NCF on MovieLens): the loaders on files written in the real layouts, leave-one-out
by timestamp, negatives that never hold a user's positives, HR@10 and NDCG@10 by hand, the per-example
signals against autograd, and runs: emulated and 2-rank torchrun rows, a reducer on NeuMF's
gradients, and a killed run resumed to the same row."""
import csv
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

import movielens
import ncf
import rectask
import tasks
from data import DataError
from runs import checkpoint, inprocess, launch, only_log

RATINGS = [  # user, item, rating, timestamp (in file order; user 2's last two tie in time)
    (1, 10, 5, 100), (1, 11, 3, 300), (1, 12, 4, 200), (2, 10, 1, 50), (2, 13, 2, 70), (2, 11, 5, 70),
    (3, 12, 4, 10), (3, 14, 4, 5)]


def write_dat(folder, rows=RATINGS):
    path = folder / "ml-1m" / "ratings.dat"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{u}::{i}::{r}::{t}\n" for u, i, r, t in rows))
    return path


def write_csv(folder, rows=RATINGS):
    path = folder / "ml-20m" / "ratings.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["userId", "movieId", "rating", "timestamp"])
        w.writerows([(u, i, f"{r}.0", t) for u, i, r, t in rows])
    return path


def test_leave_one_out_holds_out_each_users_last_interaction_by_timestamp(tmp_path):
    write_dat(tmp_path)
    frame = movielens.read_ratings("movielens-1m", tmp_path)
    users, items, held_out, n_users, n_items = movielens.leave_one_out(frame)
    user_ids, item_ids = list(dict.fromkeys(frame.user)), list(dict.fromkeys(frame.item))
    # by hand: user 1's last is item 11 (t 300); user 2's are 13 and 11 at t 70: the later line (11); user 3's: 12
    assert [item_ids[i] for i in held_out] == [11, 11, 12] and (n_users, n_items) == (3, 5)
    train = sorted((user_ids[u], item_ids[i]) for u, i in zip(users, items))
    assert train == [(1, 10), (1, 12), (2, 10), (2, 13), (3, 14)]


def write_100k(folder, rows=RATINGS, recbole=False):
    """GroupLens's ml-100k/u.data (tab-separated, no header), or RecBole's ml-100k/ml-100k.inter (its header)."""
    path = folder / "ml-100k" / ("ml-100k.inter" if recbole else "u.data")
    path.parent.mkdir(parents=True, exist_ok=True)
    header = "user_id:token\titem_id:token\trating:float\ttimestamp:float\n" if recbole else ""
    path.write_text(header + "".join(f"{u}\t{i}\t{r}\t{t}\n" for u, i, r, t in rows))
    return path


def test_every_layout_loads_the_same_split(tmp_path):
    write_dat(tmp_path / "a")
    write_csv(tmp_path / "b")
    write_100k(tmp_path / "c")
    write_100k(tmp_path / "d", recbole=True)
    for train in (True, False):
        a = movielens.load("movielens-1m", tmp_path / "a", train, 2, 1)
        for name, folder in (("movielens-20m", "b"), ("movielens-100k", "c"), ("movielens-100k", "d")):
            b = movielens.load(name, tmp_path / folder, train, 2, 1)
            assert all(torch.equal(x, y) for x, y in ((a.users, b.users), (a.items, b.items), (a.seen, b.seen),
                                                       (a.candidates, b.candidates))), (name, folder)


def test_a_recbole_file_without_its_header_is_refused(tmp_path):
    path = write_100k(tmp_path, recbole=True)
    path.write_text(path.read_text().split("\n", 1)[1])
    with pytest.raises(DataError, match="is not a MovieLens ratings file .* expected RecBole's header"):
        movielens.load("movielens-100k", tmp_path, True, 4, 1)


REAL_100K = Path(__file__).resolve().parent.parent / "data" / "ml-100k" / "ml-100k.inter"


@pytest.mark.skipif(not REAL_100K.is_file() and os.environ.get("CI") != "true",
                    reason="setup.sh puts MovieLens-100K in data/ml-100k (from RecBole's wheel on PyPI)")
def test_the_real_movielens_100k_is_what_grouplens_describes():
    """943 users, 1,682 items, 100,000 ratings, every user with at least 20 (GroupLens's README); CI must have it."""
    train = movielens.load("movielens-100k", REAL_100K.parent.parent, True, 4, 100)
    test = movielens.load("movielens-100k", REAL_100K.parent.parent, False, 4, 100)
    assert (train.num_users, train.num_items, len(train.users), len(test.users)) == (943, 1682, 100_000 - 943, 943)
    assert torch.bincount(train.users).min() >= 19 and test.candidates.shape == (943, 100)


def test_missing_or_broken_files_are_one_line_naming_the_fix(tmp_path, monkeypatch):
    import torchvision.datasets.utils as tv

    def offline(*a, **k):
        raise OSError("network unreachable")
    monkeypatch.setattr(tv, "download_and_extract_archive", offline)
    with pytest.raises(DataError, match=r"movielens-1m not found and could not be downloaded \(OSError: network "
                                        r"unreachable\); put ml-1m/ratings\.dat under .* and pass --data-dir"):
        movielens.load("movielens-1m", tmp_path, True, 4, 100)
    path = write_dat(tmp_path)
    path.write_text("1::2::x::y\nnot a rating\n")
    with pytest.raises(DataError, match="is not a MovieLens ratings file .* expected lines "
                                        "UserID::MovieID::Rating::Timestamp"):
        movielens.load("movielens-1m", tmp_path, True, 4, 100)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_negatives_never_hold_a_users_positives_and_are_the_same_on_every_worker(seed):
    rng = np.random.default_rng(seed)
    n_users, n_items = 30, 50
    pos = {(u, i) for u in range(n_users) for i in rng.choice(n_items, size=rng.integers(1, 25), replace=False)}
    seen = torch.tensor(sorted(u * n_items + i for u, i in pos))
    users = torch.from_numpy(rng.integers(0, n_users, size=5000))
    examples = torch.arange(5000)
    drawn = movielens.draw_negatives(users, examples, seen, n_items, seed, epoch=3)
    assert not any((u, i) in pos for u, i in zip(users.tolist(), drawn.tolist()))
    assert drawn.min() >= 0 and drawn.max() < n_items
    again = movielens.draw_negatives(users.flip(0), examples.flip(0), seen, n_items, seed, epoch=3)
    assert torch.equal(again, drawn.flip(0))  # an example's draw does not depend on its batch or worker
    other = movielens.draw_negatives(users, examples, seen, n_items, seed, epoch=4)
    assert (other != drawn).float().mean() > 0.5  # redrawn each epoch


def test_held_out_negatives_are_distinct_unseen_and_seeded(tmp_path):
    movielens.generate(tmp_path, users=40, items=60, per_user=12)
    a = movielens.load("generated-ratings", tmp_path, False, 4, 20)
    b = movielens.load("generated-ratings", tmp_path, False, 4, 20)
    assert torch.equal(a.candidates, b.candidates) and a.candidates.shape == (40, 20)
    seen = set(a.seen.tolist())
    for u, (held, row) in enumerate(zip(a.items.tolist(), a.candidates.tolist())):
        assert len(set(row)) == 20 and held not in row
        assert not any(u * a.num_items + i in seen for i in row)


def test_hr_and_ndcg_at_10_by_hand():
    scores = torch.tensor([[5.0] + [1.0] * 20,                 # first: rank 0
                           [5.0] + [9.0] * 3 + [1.0] * 17,    # 3 above: rank 3
                           [5.0] + [9.0] * 12 + [1.0] * 8,    # 12 above: beyond the top 10
                           [5.0] + [5.0] * 20,                # all tied: half of them above, rank 10
                           [5.0] + [9.0] * 2 + [5.0] * 4 + [1.0] * 14])  # 2 above, 4 tied: rank 4
    rank = rectask.ranks(scores)
    hit, ndcg = rectask.hit_and_ndcg(rank)
    assert rank.tolist() == [0, 3, 12, 10, 4]
    assert hit.tolist() == [1, 1, 0, 0, 1]
    assert ndcg.tolist() == pytest.approx([1.0, 1 / np.log2(5), 0.0, 0.0, 1 / np.log2(6)])


def test_the_signals_of_an_interaction_against_autograd():
    torch.manual_seed(0)
    model = ncf.NeuMF(7, 9, factors=4, width=16)
    pairs = torch.stack([torch.randint(0, 7, (6,)), torch.randint(0, 9, (6,))], dim=1)
    labels = torch.tensor([1, 0, 0, 1, 0, 0])
    task = tasks.of("movielens-1m")
    import train

    features = train.HeadInput(model.head)
    logits = model(pairs)
    got = task.signals(logits, labels, ("loss", "correct", "el2n", "grad_norm"), features)
    score = logits[:, 1]
    bce = torch.nn.functional.binary_cross_entropy_with_logits(score, labels.float(), reduction="none")
    torch.testing.assert_close(got["loss"], bce.detach())
    assert got["correct"].tolist() == ((score > 0).long() == labels).float().tolist()
    p = torch.sigmoid(score.detach())
    torch.testing.assert_close(got["el2n"], np.sqrt(2) * (p - labels).abs())
    for k in range(6):  # the head's gradient (weight and bias) of each example's loss
        model.zero_grad()
        one = model(pairs[k:k + 1])[:, 1]
        torch.nn.functional.binary_cross_entropy_with_logits(one, labels[k:k + 1].float()).backward()
        norm = torch.cat([model.head.weight.grad.flatten(), model.head.bias.grad]).norm()
        assert got["grad_norm"][k].item() == pytest.approx(norm.item(), rel=1e-5)


def generated(tmp_path):
    movielens.generate(tmp_path / "data", users=60, items=80, per_user=15)
    return ["--dataset", "generated-ratings", "--data-dir", str(tmp_path / "data"), "--total-epochs", "4",
            "--warmup-epochs", "2", "--interval-epochs", "1", "--ignore-epochs", "0", "--batch-size", "64",
            "--optimizer", "adamw", "--lr", "0.003", "--weight-decay", "0", "--test-negatives", "20"]


def row(folder) -> dict:
    (path,) = [p for p in folder.rglob("W*.csv")]
    return pd.read_csv(path).iloc[0].to_dict()


@pytest.mark.slow
def test_emulated_and_torchrun_runs_write_the_same_row(tmp_path):
    argv = generated(tmp_path)
    inprocess([*argv, "--emulate-workers", "2", "--results-dir", str(tmp_path / "emulated")])
    launch([*argv, "--results-dir", str(tmp_path / "ranks")], nproc=2)
    mine, theirs = row(tmp_path / "emulated"), row(tmp_path / "ranks")
    assert mine == theirs and 0 < mine["best_hr10"] <= 100 and mine["dataset"] == "generated-ratings"
    log = only_log(tmp_path / "ranks")
    assert all(0 <= e["ndcg10"] <= e["hr10"] for e in log["epochs"]) and log["epochs"][0]["test_users"] == 60


@pytest.mark.slow
def test_a_reducer_exchanges_neumfs_gradients(tmp_path):
    inprocess([*generated(tmp_path), "--emulate-workers", "2", "--emulation", "sequential", "--reducer", "exdyna",
               "--density", "0.01", "--results-dir", str(tmp_path / "res")])
    epochs = only_log(tmp_path / "res")["epochs"]
    assert all(0 < e["exchange"]["density"] < 0.2 and e["exchange"]["bytes_per_worker"] < e["exchange"]["dense_bytes"]
               for e in epochs)


@pytest.mark.slow
def test_a_killed_run_resumes_to_the_same_row(tmp_path):
    argv = [*generated(tmp_path), "--emulate-workers", "2", "--checkpoint-every", "1"]
    inprocess([*argv, "--results-dir", str(tmp_path / "whole")])
    cut = [*argv, "--results-dir", str(tmp_path / "cut")]
    killed = launch(["train.train_epoch", "3", "--", *cut], script="tests/die_at.py", check=False)
    assert killed.returncode != 0 and checkpoint(tmp_path / "cut")["epoch"] == 2
    launch([*cut, "--resume"])
    assert row(tmp_path / "cut") == row(tmp_path / "whole")


@pytest.mark.parametrize("width,factors", [(3, 3), (48, 8), (64, 12)])
def test_a_neumf_that_cannot_halve_to_its_factors_is_refused(width, factors, capsys):
    from runs import run_expecting_error

    message = run_expecting_error(["--dataset", "movielens-1m", "--mlp-width", str(width), "--factors", str(factors)],
                                  capsys)
    assert f"--mlp-width {width} must be even" in message


def test_a_pair_rated_twice_counts_once_at_its_latest_rating_and_is_said(tmp_path):
    """A duplicate would put the held-out item into training too: the latest rating of the pair is the
    interaction, and the split's source (the run's first line) counts what was dropped."""
    rows = RATINGS + [(1, 11, 2, 50), (3, 12, 1, 999)]  # user 1's held-out 11 rated earlier too; user 3's 12 later
    write_dat(tmp_path, rows)
    train = movielens.load("movielens-1m", tmp_path, True, 2, 1)
    test = movielens.load("movielens-1m", tmp_path, False, 2, 1)
    assert "2 repeated user-item ratings dropped" in train.source
    frame = movielens.read_ratings("movielens-1m", tmp_path)
    users, items, held_out, _, _ = movielens.leave_one_out(frame)
    item_ids = list(dict.fromkeys(frame.item))
    assert [item_ids[i] for i in held_out] == [11, 11, 12]  # user 3's last is now 12 at t 999
    pairs = set(zip(train.users.tolist(), train.items.tolist()))
    assert all((u, int(i)) not in pairs for u, i in zip(test.users.tolist(), test.items.tolist()))


@pytest.mark.parametrize("value,column", [("18446744073709551615", "user"), ("-1", "item"), ("3.5", "user"),
                                          ("x", "item"), ("12.5", "timestamp")])
def test_an_id_that_is_not_a_non_negative_int64_is_refused_naming_its_line(tmp_path, value, column):
    write_dat(tmp_path)
    path = tmp_path / "ml-1m" / "ratings.dat"
    lines = path.read_text().splitlines()
    fields = lines[4].split("::")
    fields[{"user": 0, "item": 1, "timestamp": 3}[column]] = value
    lines[4] = "::".join(fields)
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=f"ratings.dat, line 5: {column} '{value}' is not a non-negative integer"):
        movielens.read_ratings("movielens-1m", tmp_path)
