"""MovieLens ratings as implicit feedback, for NCF (He et al., WWW 2017): the recommendation task's data.

dpt.py loads the splits through `load` before any process group starts; by hand:

    python -c "import movielens; print(movielens.load('movielens-100k', 'data', train=True, negatives=4, \
test_negatives=100).num_users)"
    python -c "import movielens; print(movielens.generate('/tmp/movielens-example', users=50, items=80))"

Every rating is an interaction (a positive, whatever its stars). Each user's last interaction by
timestamp (ties: the later line of the file) is held out (leave-one-out); the others are training
positives. A training example is a (positive, slot) pair: slot 0 is the positive itself (target
1), slots 1..k its k sampled negatives (target 0), each redrawn every epoch from a counter-based
hash of (seed, epoch, example), so that any worker draws the same negative for an example, and
never one of the user's training positives. The held-out split is one row per user: its held-out
item and --test-negatives items it never interacted with (seeded once; 100, as NVIDIA's and
ExDyna's NCF benchmarks; He et al. used 99), ranked by the model (HR@10, NDCG@10).

Files, in --data-dir (downloaded there when missing and the network is reachable; the record's
train_files lists the layouts read, the first found is used):
- movielens-100k: ml-100k/u.data (GroupLens's ml-100k.zip), lines `user<TAB>item<TAB>rating<TAB>timestamp`,
  no header; or ml-100k/ml-100k.inter, the same ratings in RecBole's atomic format (a header
  `user_id:token<TAB>item_id:token<TAB>rating:float<TAB>timestamp:float`), which setup.sh extracts
  from RecBole's wheel on PyPI, so the real data is there offline.
- movielens-1m: ml-1m/ratings.dat, lines `UserID::MovieID::Rating::Timestamp`, no header.
- movielens-20m: ml-20m/ratings.csv, header `userId,movieId,rating,timestamp`.
- generated-ratings: generated-ratings/ratings.dat in the ml-1m layout, written by `generate` from a
  seeded generator (its numbers say nothing about MovieLens; its rows and titles say "generated").
"""
import io
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

import augment
import catalog as C
import results
from data import DataError, _fetch, checked_folder

GROUPLENS = "https://files.grouplens.org/datasets/movielens"
URLS = {"movielens-100k": f"{GROUPLENS}/ml-100k.zip", "movielens-1m": f"{GROUPLENS}/ml-1m.zip",
        "movielens-20m": f"{GROUPLENS}/ml-20m.zip", "generated-ratings": None}  # None: written by generate()
# Each layout: (separator, header line or None, what its lines look like); columns user, item, rating, timestamp.
LAYOUTS = {".dat": ("::", None, "lines UserID::MovieID::Rating::Timestamp"),
           ".csv": (",", "userId,movieId,rating,timestamp", "a header userId,movieId,rating,timestamp"),
           ".data": ("\t", None, "tab-separated lines user item rating timestamp"),
           ".inter": ("\t", "user_id:token\titem_id:token\trating:float\ttimestamp:float",
                      "RecBole's header user_id:token item_id:token rating:float timestamp:float, tab-separated")}
TEST_SEED = 0  # the held-out negatives are drawn once, the same for every run
INT64_MAX = 2**63 - 1
MAX_DRAWS = 64  # rejection rounds for a training negative (a user's positives are a small share of the items)
DRAW_KEYS = [augment.hash32_int(d) for d in range(MAX_DRAWS)]


@dataclass
class Split:
    users: torch.Tensor  # (P,) int64: a training positive's user, or each held-out user
    items: torch.Tensor  # (P,) int64: its item (held out: the held-out item)
    num_users: int
    num_items: int
    negatives: int  # training: sampled negatives per positive (examples = P x (1 + negatives)); held out: 0
    seen: torch.Tensor  # sorted int64 keys user * num_items + item of every training positive
    candidates: torch.Tensor  # held out: (users, test negatives) int64 items; training: empty
    source: str = ""

    def __len__(self) -> int:
        return len(self.users) * (1 + self.negatives)

    def to(self, device: torch.device | str) -> "Split":
        return Split(self.users.to(device), self.items.to(device), self.num_users, self.num_items, self.negatives,
                     self.seen.to(device), self.candidates.to(device), self.source)


def ratings_file(name: str, root: Path) -> Path:
    """The first of the record's layouts present in `root`; downloaded when none is and it has a URL."""
    spec = C.DATASETS[name]
    found = [root / f for f in spec.train_files if (root / f).is_file()]
    if found:
        return found[0]
    if URLS[name] is None:
        raise DataError(f"{root / spec.train_files[0]} not found; write it with: python -c \"import movielens; "
                        f"movielens.generate('{root}')\" (generated ratings), or pass the --data-dir that holds it")
    import torchvision.datasets.utils as tv

    _fetch(name, root, lambda: tv.download_and_extract_archive(URLS[name], str(root)))
    return root / spec.train_files[0]


def read_ratings(name: str, root: Path) -> pd.DataFrame:
    """(user, item, timestamp) of every rating, in file order; DataError naming the fix otherwise."""
    path = ratings_file(name, root)
    separator, header, expected = LAYOUTS[path.suffix]
    try:
        raw = path.read_bytes()
        if header is not None and raw.split(b"\n", 1)[0].decode().strip() != header:
            raise ValueError(f"its first line is not the header {header!r}")
        if separator == "::":
            raw, separator = raw.replace(b"::", b","), ","
        frame = pd.read_csv(io.BytesIO(raw), sep=separator, header=0 if header else None, dtype=str,
                            names=["user", "item", "rating", "timestamp"], usecols=[0, 1, 2, 3], keep_default_na=False)
    except (ValueError, KeyError, pd.errors.ParserError, UnicodeDecodeError) as err:
        raise DataError(f"{path} is not a MovieLens ratings file ({type(err).__name__}: {str(err)[:120]}); expected "
                        f"{expected}; delete it so that it is downloaded again") from None
    first = 2 if header else 1  # the file's line of the frame's row 0
    short = frame.eq("").any(axis=1)
    if short.any():
        raise DataError(f"{path} is not a MovieLens ratings file (line {int(short.to_numpy().argmax()) + first} has "
                        f"fewer than 4 fields); expected {expected}; delete it so that it is downloaded again")
    for column in ("user", "item", "timestamp"):
        text = frame[column].str.strip().str.removesuffix(".0" if column == "timestamp" else "\0")
        bad = ~text.str.fullmatch(r"\d{1,19}") | (text.str.len() == 19) & (text > str(INT64_MAX))
        if bad.any():
            row = int(bad.to_numpy().argmax())
            raise DataError(f"{path}, line {row + first}: {column} {frame[column].iloc[row]!r} is not a non-negative "
                            "integer within int64; fix that line (or delete the file so that it is downloaded again)")
        frame[column] = text.astype("int64")
    frame = frame[["user", "item", "timestamp"]]
    if len(frame) < 2:
        raise DataError(f"{path} holds {len(frame)} ratings; NCF needs at least one training and one held-out one")
    # A pair rated twice would leak its held-out item into training: the latest rating of each pair
    # (by timestamp, then by line) is the interaction, the others are dropped and counted.
    latest = frame.reset_index().sort_values(["timestamp", "index"], kind="stable")
    kept = latest.drop_duplicates(["user", "item"], keep="last").sort_values("index").set_index("index")
    kept.index.name = None
    kept.attrs["duplicates"] = len(frame) - len(kept)
    return kept


def leave_one_out(frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray, int, int]:
    """Users and items renumbered 0.. in order of first appearance; each user's last interaction by
    timestamp (ties: file order) held out. Returns (train users, train items, held-out item per user,
    users, items); a user whose only rating is held out has no training positive."""
    users, user_ids = pd.factorize(frame.user)
    items, item_ids = pd.factorize(frame.item)
    order = np.lexsort((np.arange(len(frame)), frame.timestamp.to_numpy(), users))  # user, then time, then line
    users, items = users[order], items[order]
    last = np.r_[users[1:] != users[:-1], True]
    held_out = np.empty(len(user_ids), dtype=np.int64)
    held_out[users[last]] = items[last]
    return users[~last].astype(np.int64), items[~last].astype(np.int64), held_out, len(user_ids), len(item_ids)


def held_out_negatives(train_users: np.ndarray, train_items: np.ndarray, held_out: np.ndarray, num_items: int,
                   count: int) -> np.ndarray:
    """(users, count) distinct items each user never interacted with, drawn once (TEST_SEED)."""
    rng = np.random.default_rng(TEST_SEED)
    positives = [set() for _ in range(len(held_out))]
    for u, i in zip(train_users.tolist(), train_items.tolist()):
        positives[u].add(i)
    out = np.empty((len(held_out), count), dtype=np.int64)
    for u, mine in enumerate(positives):
        mine.add(int(held_out[u]))
        if num_items - len(mine) < count:
            raise DataError(f"user {u} interacted with {len(mine)} of the {num_items} items, leaving fewer than "
                            f"--test-negatives {count} to rank against; pass a smaller --test-negatives")
        picked: list[int] = []
        while len(picked) < count:
            for i in rng.integers(0, num_items, size=2 * count).tolist():
                if i not in mine and i not in picked:
                    picked.append(i)
                    if len(picked) == count:
                        break
        out[u] = picked
    return out


def load(name: str, data_dir: str | os.PathLike, train: bool, negatives: int, test_negatives: int,
         subset: int = 0, evaluate: int = 0) -> Split:
    """The training or held-out split; with subset > 0, only the first `subset` users (in order of
    first appearance) in both; with evaluate > 0, only the first `evaluate` of them held out."""
    root = checked_folder(data_dir)
    frame = read_ratings(name, root)
    train_users, train_items, held_out, num_users, num_items = leave_one_out(frame)
    if subset:
        if subset > num_users:
            raise DataError(f"--{'subset' if train else 'test-subset'} {subset} exceeds the {num_users} users of "
                            f"{name}; pass at most {num_users}")
        keep = train_users < subset
        train_users, train_items, held_out, num_users = train_users[keep], train_items[keep], held_out[:subset], subset
    counts = np.bincount(train_users, minlength=num_users)
    if counts.max(initial=0) > num_items // 2:
        raise DataError(f"a user of {name} has {counts.max()} of the {num_items} items as positives: too few are "
                        "left to sample negatives from; drop such users from the ratings")
    seen = torch.from_numpy(np.unique(train_users * num_items + train_items))
    twice = frame.attrs.get("duplicates", 0)
    source = str(ratings_file(name, root)) + (f", the first {subset} users" if subset else "") + (
        f" ({twice} repeated user-item ratings dropped: the latest of each pair kept)" if twice else "")
    if train:
        return Split(torch.from_numpy(train_users), torch.from_numpy(train_items), num_users, num_items, negatives,
                     seen, torch.empty(0, 0, dtype=torch.int64), source)
    if evaluate > num_users:
        raise DataError(f"--test-subset {evaluate} exceeds the {num_users} users; pass at most {num_users}")
    kept = evaluate or num_users
    candidates = held_out_negatives(train_users, train_items, held_out, num_items, test_negatives)[:kept]
    return Split(torch.arange(kept), torch.from_numpy(held_out[:kept]), num_users, num_items, 0, seen,
                 torch.from_numpy(candidates), source + f" (held out: the last of {kept} users)")


def draw_negatives(users: torch.Tensor, examples: torch.Tensor, seen: torch.Tensor, num_items: int, seed: int,
                   epoch: int) -> torch.Tensor:
    """An item per example that its user never had as a training positive: hash(seed, epoch, example,
    draw) mod items for the first draw that is not one. On the examples' device, no host read."""
    key = augment.hash32_int(augment.hash32_int(seed & augment._M32) ^ (epoch & augment._M32))
    base = augment.hash32((examples.to(torch.int64) & augment._M32) ^ key)
    draws = torch.tensor(DRAW_KEYS, dtype=torch.int64, device=base.device)
    candidates = augment.hash32(base[:, None] ^ draws) % num_items  # (B, MAX_DRAWS): every draw in one pass
    keys = users[:, None] * num_items + candidates
    if len(seen):
        hit = seen[torch.searchsorted(seen, keys).clamp(max=len(seen) - 1)] == keys
    else:
        hit = torch.zeros_like(keys, dtype=torch.bool)
    first = (~hit).to(torch.int8).argmax(dim=1)  # the first draw that is not a positive
    return candidates.gather(1, first[:, None])[:, 0]  # load refuses users with over half the items: p < 2**-64


def generate(folder: str | os.PathLike, users: int = 300, items: int = 400, per_user: int = 30,
             seed: int = 0, name: str = "generated-ratings") -> Path:
    """A ratings.dat in the ml-1m layout from a seeded generator, where dataset `name` reads it
    (<folder>/generated-ratings/ratings.dat: pass --dataset generated-ratings --data-dir folder): each
    user rates `per_user` items drawn by popularity (Zipf) within one of a few taste groups, at
    increasing timestamps. GENERATED data, for a machine without MovieLens."""
    rng = np.random.default_rng(seed)
    groups = 5
    popularity = 1.0 / np.arange(1, items + 1) ** 0.8
    lines = []
    for u in range(1, users + 1):
        g = rng.integers(groups)
        weights = popularity * np.where(np.arange(items) % groups == g, 4.0, 1.0)
        chosen = rng.choice(items, size=min(per_user, items), replace=False, p=weights / weights.sum())
        stamps = 978_300_000 + np.sort(rng.integers(0, 10**7, size=len(chosen)))
        lines += [f"{u}::{i + 1}::{rng.integers(1, 6)}::{t}" for i, t in zip(chosen, stamps)]
    path = Path(folder) / C.DATASETS[name].train_files[0]
    assert path.suffix == ".dat", "generate writes the ml-1m layout"
    results.write_bytes(path, ("\n".join(lines) + "\n").encode())
    return path
