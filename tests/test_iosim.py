import random
from collections import Counter, OrderedDict

import numpy as np
import pandas as pd
import pytest
import torch

import heuristics
import iosim
import samplers


def owners(ss, epoch):
    """example -> the worker that trains it in `epoch` (padding left out)."""
    owner = {}
    for w, s in enumerate(ss):
        s.set_epoch(epoch)
        owner.update({i: w for i in list(s)[:samplers.num_real(s)]})
    return owner


def reference(windows, num_workers, st, shuffle, sampler_seed, seed):
    """The storage model of iosim's docstring, one request at a time, in the plainest Python."""
    size = st.shard_bytes.tolist()
    lru = [OrderedDict() for _ in range(num_workers)]  # shard -> bytes, least recent first
    pinned_cached = [set() for _ in range(num_workers)]
    last = [{} for _ in range(num_workers)]  # shard -> request count at its last request
    clock = [0] * num_workers
    rows, moves, before = [], [], None
    for index, (first, length, partition) in enumerate(windows):
        ss = samplers.for_window(range(st.num_examples), partition, range(num_workers), num_workers, shuffle=shuffle,
                                 sampler_seed=sampler_seed, seed=seed)
        if before is not None:
            after = owners(ss, first)
            for w in range(num_workers):
                left = [i for i in range(st.num_examples) if before[i] == w and after[i] != w]
                joined = [i for i in range(st.num_examples) if after[i] == w and before[i] != w]
                moves.append((index, first, w, len(left), len(joined), sum(int(st.example_bytes[i]) for i in left),
                              sum(int(st.example_bytes[i]) for i in joined)))
        pinned = []
        for w in range(num_workers):
            pins = set()
            if st.policy == "partition" and partition is not None:
                counts = Counter(i // st.shard_size for i in partition[w].tolist())
                room = st.cache_bytes - max(size)
                for shard in sorted(counts, key=lambda k: (-counts[k], k)):
                    if size[shard] > room:
                        break
                    pins.add(shard)
                    room -= size[shard]
            pinned.append(pins)
            cached = set(lru[w]) | pinned_cached[w]
            pinned_cached[w] = cached & pins
            lru[w] = OrderedDict((k, size[k]) for k in sorted(cached - pins, key=lambda k: last[w][k]))
            while sum(lru[w].values()) > st.cache_bytes - sum(size[k] for k in pins):
                lru[w].popitem(last=False)
        for epoch in range(first, first + length):
            for w, s in enumerate(ss):
                s.set_epoch(epoch)
                requests = hits = fetched = 0
                for i in s:
                    shard = i // st.shard_size
                    requests += 1
                    clock[w] += 1
                    last[w][shard] = clock[w]
                    if shard in pinned_cached[w]:
                        hits += 1
                    elif shard in pinned[w]:
                        pinned_cached[w].add(shard)
                        fetched += size[shard]
                    elif shard in lru[w]:
                        lru[w].move_to_end(shard)
                        hits += 1
                    else:
                        fetched += size[shard]
                        lru[w][shard] = size[shard]
                        while sum(lru[w].values()) > st.cache_bytes - sum(size[k] for k in pinned[w]):
                            lru[w].popitem(last=False)
                rows.append((epoch, index, w, requests, hits, requests - hits, fetched))
        before = owners(ss, first + length - 1)
    return (pd.DataFrame(rows, columns=["epoch", "window", "worker", "requests", "hits", "misses", "bytes"]),
            pd.DataFrame(moves, columns=["window", "epoch", "worker", "left", "joined", "left_bytes", "joined_bytes"]))


def random_case(seed):
    rng = random.Random(seed)
    n = rng.randint(1, 4)
    num_examples = rng.randint(n, 60)
    shard_size = rng.randint(1, max(1, num_examples // n) if rng.random() < 0.7 else num_examples)
    example_bytes = np.array([rng.randint(1, 50) for _ in range(num_examples)])
    st0 = iosim.storage(num_examples, shard_size, example_bytes, cache_bytes=10**9, policy="lru")
    low, high = int(st0.shard_bytes.max()), int(st0.shard_bytes.sum())
    cache = rng.randint(low, high + low) if seed % 3 else max(low, high - rng.randint(0, 2 * low))  # or nearly all
    st = iosim.storage(num_examples, shard_size, example_bytes, cache_bytes=cache, policy=rng.choice(iosim.POLICIES))
    total, warmup = rng.randint(1, 7), rng.randint(0, 3)
    plan = [(0, max(warmup, 1))]
    while sum(p[1] for p in plan) < total:
        plan.append((sum(p[1] for p in plan), rng.randint(1, 3)))
    name = rng.choice(["stripes", "blocks", "shards"]) if num_examples // shard_size >= n else "stripes"
    if name == "shards":
        heuristic = (lambda order, scores: heuristics.shard_stripes(order, n, scores, shard_size))
    else:
        heuristic = (lambda order, scores: heuristics.HEURISTICS[name](order, n))
    windows = iosim.scored_windows(plan, num_examples, heuristic, seed=seed)
    settings = {"shuffle": rng.random() < 0.8, "sampler_seed": rng.randint(0, 3), "seed": rng.randint(0, 3)}
    return windows, n, st, settings


@pytest.mark.parametrize("seed", range(40))
def test_matches_reference(seed):
    windows, n, st, settings = random_case(seed)
    epochs, moves = iosim.simulate(windows, n, st, **settings)
    want_epochs, want_moves = reference(windows, n, st, **settings)
    pd.testing.assert_frame_equal(epochs, want_epochs, check_dtype=False)
    pd.testing.assert_frame_equal(moves, want_moves, check_dtype=False)


def per_request(windows, num_workers, st, shuffle, sampler_seed, seed):
    """The epochs of `simulate` served one request at a time through ShardCache.request (streaming's path)."""
    caches, rows = [iosim.ShardCache(st) for _ in range(num_workers)], []
    for index, (first, length, partition) in enumerate(windows):
        ss = samplers.for_window(range(st.num_examples), partition, range(num_workers), num_workers, shuffle=shuffle,
                                 sampler_seed=sampler_seed, seed=seed)
        for w, cache in enumerate(caches):
            cache.set_window(None if partition is None else partition[w])
        for epoch in range(first, first + length):
            for w, (s, cache) in enumerate(zip(ss, caches)):
                s.set_epoch(epoch)
                requests = hits = fetched = 0
                for i in s:
                    hit, _ = cache.request(i // st.shard_size)
                    requests, hits = requests + 1, hits + hit
                    fetched += 0 if hit else int(st.shard_bytes[i // st.shard_size])
                assert sum(cache.lru.values()) <= cache.capacity  # never over its bytes
                rows.append((epoch, index, w, requests, hits, requests - hits, fetched))
    return pd.DataFrame(rows, columns=["epoch", "window", "worker", "requests", "hits", "misses", "bytes"])


@pytest.mark.parametrize("seed", range(40))
def test_one_request_at_a_time_is_the_epoch_fast_path(seed):
    """streaming.WorkerReader serves requests one by one through the same cache the simulator batches."""
    windows, n, st, settings = random_case(seed)
    epochs, _ = iosim.simulate(windows, n, st, **settings)
    pd.testing.assert_frame_equal(per_request(windows, n, st, **settings), epochs, check_dtype=False)


@pytest.mark.parametrize("sampler_seed", range(4))
def test_matches_reference_when_all_hit_epochs_and_misses_alternate(sampler_seed):
    # 3 workers reading 4 of 12 examples an epoch through a cache of most of them: epochs with no
    # miss (which the simulator serves without its loop) are followed by epochs with misses
    st = iosim.storage(12, 1, np.arange(1, 13), cache_bytes=60, policy="lru")
    epochs, _ = iosim.simulate([(0, 12, None)], 3, st, sampler_seed=sampler_seed)
    want, _ = reference([(0, 12, None)], 3, st, shuffle=True, sampler_seed=sampler_seed, seed=0)
    pd.testing.assert_frame_equal(epochs, want, check_dtype=False)
    assert (epochs.misses == 0).any() and (epochs[epochs.epoch > 2].misses > 0).any()


@pytest.mark.parametrize("num_workers", [2, 4])
def test_vanilla_hit_rate_with_a_one_in_n_cache(num_workers):
    # 200 shards of 20: a worker requests each shard about 20/n times an epoch, so LRU over a random
    # 1/n slice per epoch behaves like a cache of 1/n of the shards under uniform requests
    st = iosim.storage(4000, 20, 100, cache_bytes=4000 * 100 // num_workers, policy="lru")
    epochs, _ = iosim.simulate([(0, 6, None)], num_workers, st)
    later = epochs[epochs.epoch > 0]
    assert later.hits.sum() / later.requests.sum() == pytest.approx(1 / num_workers, abs=0.03)


def plan_windows(num_examples, heuristic, seed=0):
    plan = [(0, 2), (2, 3), (5, 3), (8, 2)]  # warmup, then three intervals
    return iosim.scored_windows(plan, num_examples, heuristic, seed=seed)


def partition_bytes(windows, st, worker):
    """The bytes of the largest set of shards a worker's partition touches, over the windows."""
    return max(int(st.shard_bytes[np.unique(p[worker].numpy() // st.shard_size)].sum())
               for _, _, p in windows if p is not None)


@pytest.mark.parametrize("policy", iosim.POLICIES)
@pytest.mark.parametrize("shard_size,name", [(1, "stripes"), (1, "blocks"), (8, "shards")])
def test_fixed_partitions_hit_every_request_after_the_first_epoch(policy, shard_size, name):
    n, num_examples = 3, 240
    heuristic = (lambda o, s: heuristics.shard_stripes(o, n, s, shard_size)) if name == "shards" else \
        (lambda o, s: heuristics.HEURISTICS[name](o, n))
    windows = plan_windows(num_examples, heuristic)
    st0 = iosim.storage(num_examples, shard_size, 10, cache_bytes=10**9, policy=policy)
    enough = max(partition_bytes(windows, st0, w) for w in range(n)) + int(st0.shard_bytes.max())
    st = iosim.storage(num_examples, shard_size, 10, cache_bytes=enough, policy=policy)
    epochs, _ = iosim.simulate(windows, n, st)
    firsts = {first for first, _, _ in windows}
    later = epochs[(epochs.window > 0) & ~epochs.epoch.isin(firsts)]
    assert len(later) > 0 and (later.hits == later.requests).all() and (later.bytes == 0).all()
    assert (epochs[epochs.epoch.isin(firsts - {0})].misses > 0).any()


@pytest.mark.parametrize("policy,cache_examples", [("partition", 101), ("lru", 400)])
def test_first_epoch_misses_after_a_repartition_are_the_moved_examples(policy, cache_examples):
    # one-example shards; a cache that keeps the old partition (pinned, or never full) until it is
    # requested again, so only the examples that joined a worker are fetched
    n, num_examples = 4, 400
    scores = torch.rand(2, num_examples, generator=torch.Generator().manual_seed(5))
    p1, p2 = (heuristics.stripes(torch.sort(row, descending=True).indices, n) for row in scores)
    windows = [(0, 2, p1), (2, 2, p2)]
    st = iosim.storage(num_examples, 1, 7, cache_bytes=7 * cache_examples, policy=policy)
    epochs, moves = iosim.simulate(windows, n, st)
    first = epochs[epochs.epoch == 2].set_index("worker")
    joined = moves.set_index("worker")
    assert (joined.joined > 0).all() and moves.window.tolist() == [1] * n
    assert first.misses.tolist() == joined.joined.tolist()
    assert first.bytes.tolist() == joined.joined_bytes.tolist() == (7 * joined.joined).tolist()
    assert joined.left.sum() == joined.joined.sum()
    assert (epochs[epochs.epoch == 3].misses == 0).all()


def shards_of(part, shard_size):
    return set((part // shard_size).tolist())


def test_shard_stripes_fetches_each_shard_once_per_interval():
    n, num_examples, shard_size = 4, 1000, 25  # 40 shards
    windows = plan_windows(num_examples, lambda o, s: heuristics.shard_stripes(o, n, s, shard_size), seed=3)
    cache = 10 * shard_size * 30 + shard_size * 30  # a worker's 10 shards, plus one
    st = iosim.storage(num_examples, shard_size, 30, cache_bytes=cache, policy="partition")
    epochs, _ = iosim.simulate(windows, n, st)
    for index in range(1, len(windows)):
        first, length, partition = windows[index]
        interval = epochs[epochs.window == index]
        assert (interval[interval.epoch > first].misses == 0).all()
        fetched = interval[interval.epoch == first].set_index("worker").misses
        for w in range(n):
            new = shards_of(partition[w], shard_size)
            assert fetched[w] <= len(new)
            if index > 1:  # from one fixed partition to the next: the shards new to the worker, but for
                # the one its LRU part (what the pins leave) may still hold from earlier
                moved_in = len(new - shards_of(windows[index - 1][2][w], shard_size))
                assert moved_in - 1 <= fetched[w] <= moved_in
        assert fetched.sum() <= num_examples // shard_size
    # the same cache under example Stripes: every worker's partition touches every shard, so it thrashes
    stripes = plan_windows(num_examples, lambda o, s: heuristics.stripes(o, n), seed=3)
    striped, _ = iosim.simulate(stripes, n, st)
    assert striped[striped.window > 0].misses.sum() > 5 * epochs[epochs.window > 0].misses.sum()


@pytest.mark.parametrize(
    "num_examples,n,shard_size", [(1000, 4, 25), (1003, 4, 25), (1010, 3, 7), (50, 5, 10), (9, 2, 4)]
)
def test_shard_stripes_deals_whole_shards(num_examples, n, shard_size):
    scores = torch.rand(num_examples, generator=torch.Generator().manual_seed(num_examples), dtype=torch.float64)
    order = torch.sort(scores, descending=True, stable=True).indices
    parts = heuristics.shard_stripes(order, n, scores, shard_size)
    everything = torch.cat(parts)
    assert sorted(everything.tolist()) == list(range(num_examples))
    owners = [shards_of(p, shard_size) for p in parts]
    assert all(not (a & b) for i, a in enumerate(owners) for b in owners[i + 1:]), "a shard belongs to one worker"
    lengths = [len(p) for p in parts]
    assert max(lengths) - min(lengths) <= shard_size
    rank = torch.empty(num_examples, dtype=torch.int64)
    rank[order] = torch.arange(num_examples)
    assert all(bool((rank[p][1:] > rank[p][:-1]).all()) for p in parts), "each list in sorted order"
    # full shards by mean score, most important first, dealt round robin
    full = num_examples // shard_size
    means = scores[: full * shard_size].view(full, shard_size).mean(dim=1)
    for position, shard in enumerate(torch.sort(means, descending=True, stable=True).indices.tolist()):
        assert shard in owners[position % n]


def test_shard_stripes_needs_a_shard_per_worker():
    with pytest.raises(
        ValueError, match=r"^shard_size=30 leaves 4 shards for 5 workers; pass a shard size of at most 20$"
    ):
        heuristics.shard_stripes(torch.arange(100), 5, torch.rand(100), 30)


@pytest.mark.parametrize(
    "kwargs,message",
    [
        (
            {"cache_bytes": 0},
            r"^cache_bytes=0 cannot hold one shard \(the largest is 1000 bytes\); "
            r"give each worker's cache at least 1000 bytes$",
        ),
        ({"cache_bytes": 999}, r"^cache_bytes=999 "),
        (
            {"shard_size": 101},
            r"^shard_size=101 is larger than the dataset \(100 examples\); pass a shard size of at most 100$",
        ),
        ({"shard_size": 0}, r"^shard_size=0: "),
        ({"policy": "fifo"}, r"^policy='fifo' is unknown; pass one of lru, partition$"),
        ({"example_bytes": np.ones(7)}, r"^example_bytes must be one nonnegative number or one per example \(100\)"),
    ],
)
def test_bad_storage_parameters(kwargs, message):
    params = {
        "num_examples": 100,
        "shard_size": 10,
        "example_bytes": 100,
        "cache_bytes": 5000,
        "policy": "lru",
        **kwargs,
    }
    with pytest.raises(ValueError, match=message):
        iosim.storage(**params)


def test_windows_from_a_saved_partitions_file(tmp_path):
    parts = [torch.tensor([0, 2, 4]), torch.tensor([1, 3])]
    saved = {"args": {"shuffle": "no", "sampler_seed": 3, "seed": 17611, "batch_size": 4},
             "windows": [{"start_epoch": 1, "epochs": 2, "partition": None},
                         {"start_epoch": 3, "epochs": 1, "partition": parts, "importance": torch.rand(5)}]}
    path = tmp_path / "run.partitions.pt"
    torch.save(saved, path)
    windows, settings = iosim.windows_from_file(str(path))
    assert settings == {"shuffle": False, "sampler_seed": 3, "seed": 17611, "batch_size": 4}
    assert [(first, length) for first, length, _ in windows] == [(0, 2), (2, 1)]
    assert windows[0][2] is None and all(torch.equal(a, b) for a, b in zip(windows[1][2], parts))
    epochs, moves = iosim.simulate(windows, 2, iosim.storage(5, 1, 1, cache_bytes=3, policy="lru"), **settings)
    assert epochs.requests.tolist() == [3, 3, 3, 3, 3, 3] and moves.worker.tolist() == [0, 1]
    with pytest.raises(ValueError, match=r"^cannot read partitions file .*; pass the <log>.partitions.pt"):
        iosim.windows_from_file(str(tmp_path / "missing.pt"))


def test_partitions_must_match_the_storage():
    windows = [(0, 1, None), (1, 1, [torch.arange(0, 10, 2), torch.arange(1, 10, 2)])]
    with pytest.raises(
        ValueError,
        match=r"^the partitions cover 10 examples but the storage holds 12; build the storage with num_examples=10$",
    ):
        iosim.simulate(windows, 2, iosim.storage(12, 2, 1, cache_bytes=4, policy="lru"))
    with pytest.raises(ValueError, match=r"^num_workers=3 but the partitions have 2 workers; pass num_workers=2$"):
        iosim.simulate(windows, 3, iosim.storage(10, 2, 1, cache_bytes=4, policy="lru"))


def test_the_command_refuses_a_heuristic_that_cannot_deal_its_shards(capsys):
    """Shard Stripes deals whole shards: 400 examples in shards of 300 cannot feed 4 workers. One line,
    naming the fix, before any simulation."""
    with pytest.raises(SystemExit) as stopped:
        iosim.main(["--examples", "400", "--heuristics", "stripes", "shard-stripes", "--shard-size", "300"])
    err = capsys.readouterr().err.strip().splitlines()
    assert stopped.value.code == 2 and len(err) == 1
    assert err[0].startswith("iosim.py: error: ") and "pass a --shard-size of at most 100" in err[0]
