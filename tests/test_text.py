import math
import re
import shutil

import pytest
import torch

import text
from data import DataError


def write_lines(path, n: int) -> list[str]:
    """A UTF-8 file of n distinct lines with multi-byte characters; returns its lines (ends kept)."""
    lines = [f"line {i:05d}: café naïve 日本 🙂 {'x' * (i % 17)}\n" for i in range(n)]
    path.write_text("".join(lines), encoding="utf-8")
    return lines


def reference_split(lines: list[str], train: bool) -> bytes:
    """Plain restatement of the rule: line j belongs to unit j // 100 + 1; units 10, 20, ... are held out."""
    return "".join(line for j, line in enumerate(lines) if ((j // 100 + 1) % 10 == 0) != train).encode("utf-8")


@pytest.mark.parametrize("s", ["", "plain ASCII", "café naïve", "日本語のテキスト",
                               "emoji 🙂👍🏽 and \x00 nul", "a\r\nb\n"])
def test_encode_decode_round_trip(s):
    tokens = text.encode(s)
    assert tokens.dtype == torch.uint8 and tokens.tolist() == list(s.encode("utf-8"))
    assert text.decode(tokens) == s


def test_decode_marks_bytes_that_are_not_utf8():
    cut = text.encode("日本")[:-1]  # a sample cut mid-character
    assert text.decode(cut) == "日\ufffd"


def test_bits_per_byte_is_nats_over_ln2():
    assert text.bits_per_byte(math.log(256)) == pytest.approx(8.0)
    assert text.bits_per_byte(math.log(2)) == pytest.approx(1.0)


@pytest.mark.parametrize("seq_len", [1, 16, 128])
def test_chunks_cover_the_training_text_once_in_order(tmp_path, seq_len):
    lines = write_lines(tmp_path / "t.txt", 2345)
    split = text.load(str(tmp_path / "t.txt"), tmp_path, seq_len=seq_len, train=True)
    expected = reference_split(lines, train=True)
    n = len(expected) // (seq_len + 1)
    assert split.tokens.shape == (n, seq_len + 1) and split.tokens.dtype == torch.uint8
    assert split.tokens.flatten().numpy().tobytes() == expected[: n * (seq_len + 1)]
    assert split.dropped == len(expected) - n * (seq_len + 1) < seq_len + 1


def test_held_out_split_is_whole_units_disjoint_from_training(tmp_path):
    lines = write_lines(tmp_path / "t.txt", 2345)
    units = text.units(str(tmp_path / "t.txt"), tmp_path)
    assert len(units) == 24 and b"".join(units) == (tmp_path / "t.txt").read_bytes()  # they tile the file
    held = text.split_units(units, train=False)
    assert held == reference_split(lines, train=False) == "".join(lines[900:1000] + lines[1900:2000]).encode()
    train = text.decode(text.load(str(tmp_path / "t.txt"), tmp_path, 16, train=True).tokens.flatten())
    test = text.decode(text.load(str(tmp_path / "t.txt"), tmp_path, 16, train=False).tokens.flatten())
    numbers = lambda s: set(int(m) for m in re.findall(r"line (\d{5})", s))  # noqa: E731
    assert numbers(train).isdisjoint(range(900, 1000)) and numbers(train).isdisjoint(range(1900, 2000))
    assert numbers(test) <= set(range(900, 1000)) | set(range(1900, 2000))
    assert numbers(train) | numbers(test) >= set(range(2340))  # nothing lost but the dropped tails


def test_units_never_split_a_character():
    raw = "".join(f"é{i}\r\n" if i % 3 else f"日{i}\r" for i in range(450)).encode("utf-8")
    blocks = text.line_blocks(raw)
    assert len(blocks) == 5 and b"".join(blocks) == raw
    assert all(b.decode("utf-8") for b in blocks)  # each block is valid UTF-8 on its own


def test_subset_takes_the_first_chunks(tmp_path):
    write_lines(tmp_path / "t.txt", 1200)
    full = text.load(str(tmp_path / "t.txt"), tmp_path, 32, train=True)
    sub = text.load(str(tmp_path / "t.txt"), tmp_path, 32, train=True, subset=7)
    assert torch.equal(sub.tokens, full.tokens[:7])
    with pytest.raises(DataError, match="--test-subset 9999 exceeds the .*pass at most"):
        text.load(str(tmp_path / "t.txt"), tmp_path, 32, train=False, subset=9999)


def test_split_moves_to_a_device(tmp_path):
    write_lines(tmp_path / "t.txt", 300)
    split = text.load(str(tmp_path / "t.txt"), tmp_path, 8, train=True)
    moved = split.to("meta")
    assert moved.tokens.device.type == "meta" and len(moved) == len(split) and moved.dropped == split.dropped


def test_bad_files_raise_data_error_naming_the_fix(tmp_path):
    with pytest.raises(DataError, match=r"--text-file .*nope.txt: no such file; pass the path of a UTF-8 text file"):
        text.load(str(tmp_path / "nope.txt"), tmp_path, 8, train=True)
    with pytest.raises(DataError, match="no such file"):
        text.load(str(tmp_path), tmp_path, 8, train=True)  # a folder is not a text file
    (tmp_path / "empty.txt").write_bytes(b"")
    with pytest.raises(DataError, match="empty.txt is empty; pass a UTF-8 text file"):
        text.load(str(tmp_path / "empty.txt"), tmp_path, 8, train=True)
    (tmp_path / "latin1.txt").write_bytes("café\n".encode("latin-1") * 50)
    with pytest.raises(DataError, match="is not UTF-8 text \\(byte 0xe9 at offset 3\\); convert it"):
        text.load(str(tmp_path / "latin1.txt"), tmp_path, 8, train=True)


def test_a_corpus_shorter_than_one_chunk_per_worker_is_refused(tmp_path):
    (tmp_path / "short.txt").write_text("abcdefghij" * 3)  # 30 bytes: three chunks of 10
    assert len(text.load(str(tmp_path / "short.txt"), tmp_path, 9, train=True, min_examples=3)) == 3
    with pytest.raises(DataError, match="training text .* holds 3 chunks of 10 bytes, fewer than one per worker "
                                        "\\(4\\); use a longer text, a smaller --seq-len, or fewer workers"):
        text.load(str(tmp_path / "short.txt"), tmp_path, 9, train=True, min_examples=4)
    with pytest.raises(DataError, match="held-out .* holds 0 chunks"):  # 1 line: no 10th unit
        text.load(str(tmp_path / "short.txt"), tmp_path, 9, train=False)
    with pytest.raises(DataError, match="--seq-len 0"):
        text.load(str(tmp_path / "short.txt"), tmp_path, 0, train=True)


def test_kjv_missing_package_says_how_to_install(tmp_path, monkeypatch):
    monkeypatch.setattr(text.shutil, "which", lambda name: None)
    with pytest.raises(DataError, match="apt-get install bible-kjv"):
        text.load("kjv", tmp_path, 128, train=True)


def fake_kjv(chapters: int) -> bytes:
    return b"".join(b"\nBook %d\n\n  1 In the beginning.\n  2 And so on.\n" % c for c in range(1, chapters + 1))


def test_kjv_reads_its_cache_and_rejects_a_corrupt_one(tmp_path, monkeypatch):
    monkeypatch.setattr(text.shutil, "which", lambda name: None)  # the cache must do without the program
    (tmp_path / "kjv").mkdir()
    (tmp_path / "kjv" / "kjv.txt").write_bytes(fake_kjv(text.KJV_CHAPTERS))
    held = text.split_units(text.units("kjv", tmp_path), train=False)
    assert re.findall(rb"\nBook (\d+)\n", held) == [b"%d" % c for c in range(10, 1181, 10)]
    (tmp_path / "kjv" / "kjv.txt").write_bytes(fake_kjv(text.KJV_CHAPTERS - 1))
    with pytest.raises(DataError, match="corrupt KJV cache .*found 1188.*delete it"):
        text.load("kjv", tmp_path, 128, train=True)


@pytest.mark.skipif(shutil.which("bible") is None,
                    reason="Debian's bible-kjv is not installed (apt-get install bible-kjv)")
def test_real_kjv_loads_with_its_chapters(tmp_path, monkeypatch):
    chapters = text.units("kjv", tmp_path)
    headers = [re.match(rb"\n(.*) (\d+)\n\n", c).groups() for c in chapters]
    books = list(dict.fromkeys(book for book, _ in headers))
    assert len(chapters) == 1189 and len(books) == 66 and books[0] == b"Genesis" and books[-1] == b"Revelation"
    assert sum(c.count(b"\n  ") for c in chapters) == 31102  # verses
    assert chapters[0].startswith(b"\nGenesis 1\n\n  1 In the beginning God created the heaven and the earth.\n")
    held = [b"%s %s" % h for i, h in enumerate(headers, start=1) if i % 10 == 0]
    assert held[:6] == [b"Genesis 10", b"Genesis 20", b"Genesis 30", b"Genesis 40", b"Genesis 50", b"Exodus 10"]
    assert len(held) == 118 and held[-1] == b"Revelation 13"
    assert (tmp_path / "kjv" / "kjv.txt").read_bytes() == b"".join(chapters)  # cached as plain text
    train = text.load("kjv", tmp_path, 128, train=True)
    test = text.load("kjv", tmp_path, 128, train=False)
    assert text.decode(test.tokens[0]).startswith("\nGenesis 10\n\n  1 Now these are the generations")
    train_text = text.decode(train.tokens.flatten())
    assert "\nGenesis 9\n" in train_text and "\nGenesis 10\n" not in train_text and "\nGenesis 11\n" in train_text
    total = sum(map(len, chapters))
    assert (len(train) + len(test)) * 129 + train.dropped + test.dropped == total
    monkeypatch.setattr(text.shutil, "which", lambda name: None)  # later runs need only the cache
    assert torch.equal(text.load("kjv", tmp_path, 128, train=True).tokens, train.tokens)
