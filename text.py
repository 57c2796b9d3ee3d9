"""Text corpora as byte tokens, cut into fixed indexed chunks: the language-modelling task's data.

dpt.py loads the training and held-out splits through `load` before any process group starts;
by hand:

    python -c "import text; s = text.load('kjv', 'data', seq_len=128, train=True); print(s.tokens.shape, s.dropped); \
print(text.decode(s.tokens[0]))"

Tokens are the UTF-8 bytes of the text (vocabulary 256, no tokenizer), so a model's mean
cross-entropy in nats per token is nats per byte, and `bits_per_byte` is that over ln 2.

An example is one chunk of seq_len + 1 consecutive bytes (inputs chunk[:-1], targets chunk[1:]),
addressed by its index. A split's text is cut into non-overlapping chunks that cover it exactly
once, in order; the tail shorter than a chunk is left out (`Split.dropped` says how many bytes).
No state passes from one chunk to the next, so chunks are independent examples that any sampler
may deal to any worker, like images.

Corpora, each a sequence of whole units (the held-out split is every 10th unit, counting from 1:
units 10, 20, 30, ...; the training split is all the others, in reading order):
- "kjv": the King James Bible from Debian's `bible-kjv` (apt-get install bible-kjv; it pulls in
  `bible-kjv-text`, whose /usr/lib/bible.data the `bible` program decompresses). The text is what
  `bible -l 100000 Gen1:1-Rev22:21` prints (one verse per line, a header line per chapter), cached
  in <data-dir>/kjv/kjv.txt so later runs need neither package. A unit is a chapter: 1189 of them,
  each "\\n<Book> <chapter>\\n\\n" followed by lines "  <verse> <text>\\n". Held out: the 118
  chapters 10, 20, ..., 1180 of the whole Bible in reading order (Genesis 10, Genesis 20, Genesis
  30, Genesis 40, Genesis 50, Exodus 10, ...): 4,298,239 bytes split into 3,883,555 training and
  414,684 held-out bytes; at seq_len 128, 30,105 training chunks (dropping 10 bytes) and 3,214
  held-out chunks (dropping 78 bytes).
- any other name is the path of a UTF-8 text file (e.g. Tiny Shakespeare). A unit is a block of
  100 lines (the last block may be shorter; lines end at \\n, \\r or \\r\\n and keep their ends), so
  the held-out split is lines 901-1000, 1901-2000, ...; a file needs over 900 lines for a held-out
  split. The name 'kjv' always means the Bible: pass ./kjv for a file of that name.
"""
import math
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import torch

import results
from data import DataError, checked_folder

VOCAB = 256  # the byte values
HELD_OUT_EVERY = 10  # unit i (counting from 1) is held out when i is a multiple of this
LINES_PER_UNIT = 100  # a text file's unit
KJV_CHAPTERS = 1189
KJV_RANGE = "Gen1:1-Rev22:21"
# One unit of the `bible` output: blank line, "<Book> <chapter>", blank line, "  <verse> <text>" lines.
KJV_CHAPTER = re.compile(rb"\n[^ \n][^\n]* \d+\n\n(?:  \d+ [^\n]*\n)+")
KJV_CHAPTER_START = re.compile(rb"\n(?=[^ \n][^\n]* \d+\n\n)")  # the blank line before a header


def bits_per_byte(loss_nats: float) -> float:
    """Mean cross-entropy in nats per byte token -> bits per byte (the usual byte-level LM metric)."""
    return loss_nats / math.log(2)


@dataclass
class Split:
    tokens: torch.Tensor  # (N, seq_len + 1) uint8: chunk i is example i
    dropped: int  # bytes of the whole split after its last whole chunk, left out (a subset leaves out more)
    source: str = ""  # what it was read from, for the run's log

    def __len__(self) -> int:
        return len(self.tokens)

    def to(self, device: torch.device | str) -> "Split":
        return Split(self.tokens.to(device), self.dropped, self.source)


def _byte_tensor(raw: bytes) -> torch.Tensor:
    return torch.frombuffer(bytearray(raw), dtype=torch.uint8) if raw else torch.empty(0, dtype=torch.uint8)


def encode(text: str) -> torch.Tensor:
    """The UTF-8 bytes of `text` as a 1-D uint8 tensor."""
    return _byte_tensor(text.encode("utf-8"))


def decode(tokens: torch.Tensor) -> str:
    """Bytes back to text; exact for anything `encode` made. A byte sequence that is not UTF-8 (a
    model's sample cut mid-character) decodes with U+FFFD in place of the bad bytes."""
    return tokens.to("cpu", torch.uint8).numpy().tobytes().decode("utf-8", errors="replace")


def load_text_file(path: str | os.PathLike) -> str:
    """The contents of a UTF-8 text file; a missing, empty or non-UTF-8 file raises DataError."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise DataError(f"--text-file {path}: no such file; pass the path of a UTF-8 text file (or --dataset kjv)")
    raw = path.read_bytes()
    if not raw:
        raise DataError(f"--text-file {path} is empty; pass a UTF-8 text file with some text in it")
    if b"\x00" in raw:
        raise DataError(f"--text-file {path} holds NUL bytes (the first at offset {raw.index(0)}): a binary file, not "
                        "text; pass a UTF-8 text file")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise DataError(f"--text-file {path} is not UTF-8 text (byte 0x{raw[err.start]:02x} at offset {err.start}); "
                        f"convert it, e.g. iconv -f LATIN1 -t UTF-8, or pass another file") from None


def kjv_chapters(raw: bytes) -> list[bytes]:
    """The KJV text as printed by `bible`, cut into its 1189 chapters (they tile it exactly); ValueError
    when `raw` is not in that layout."""
    starts = [m.start() for m in KJV_CHAPTER_START.finditer(raw)]
    chapters = [raw[a:b] for a, b in zip(starts, starts[1:] + [len(raw)])]
    if (not raw.isascii() or starts[:1] != [0] or len(chapters) != KJV_CHAPTERS
            or not all(KJV_CHAPTER.fullmatch(c) for c in chapters)):
        raise ValueError(f"expected {KJV_CHAPTERS} chapters of ASCII text in the layout of `bible -l`, "
                         f"found {len(chapters)}")
    return chapters


def line_blocks(raw: bytes, lines: int = LINES_PER_UNIT) -> list[bytes]:
    """A file's units: consecutive blocks of `lines` lines (ends kept), tiling the file exactly.
    Cutting at line ends never splits a UTF-8 character (newline bytes occur in no multi-byte one)."""
    all_lines = raw.splitlines(keepends=True)
    return [b"".join(all_lines[i: i + lines]) for i in range(0, len(all_lines), lines)]


def split_units(units: list[bytes], train: bool) -> bytes:
    """The training split (every unit but the held-out ones) or the held-out split (units 10, 20, ...),
    each in reading order."""
    return b"".join(u for i, u in enumerate(units, start=1) if (i % HELD_OUT_EVERY == 0) != train)


def chunk(raw: bytes, seq_len: int) -> Split:
    """Non-overlapping chunks of seq_len + 1 bytes covering `raw` once, in order; the tail is dropped."""
    n = len(raw) // (seq_len + 1)
    tokens = _byte_tensor(raw[: n * (seq_len + 1)]).view(n, seq_len + 1)
    return Split(tokens, len(raw) - n * (seq_len + 1))


def _run_bible() -> bytes:
    exe = shutil.which("bible")
    if exe is None:
        raise FileNotFoundError("no `bible` program on PATH")
    # -l: one verse per line (no wrapping); stdin closed so that it never waits for commands.
    return subprocess.run([exe, "-l", "100000", KJV_RANGE], stdin=subprocess.DEVNULL, capture_output=True,
                          check=True, timeout=120).stdout


def kjv(data_dir: str | os.PathLike) -> list[bytes]:
    """The KJV's chapters, from the cache <data-dir>/kjv/kjv.txt or else from bible-kjv (then cached)."""
    cache = checked_folder(data_dir) / "kjv" / "kjv.txt"
    if cache.is_file():
        try:
            return kjv_chapters(cache.read_bytes())
        except ValueError as err:
            raise DataError(f"corrupt KJV cache {cache} ({err}); delete it so that it is made again "
                            f"from bible-kjv, or point --data-dir at a good copy") from None
    try:
        raw = _run_bible()
    except (OSError, subprocess.SubprocessError) as err:
        raise DataError(f"--dataset kjv needs Debian's bible-kjv (could not run `bible`: {err}); "
                        f"apt-get install bible-kjv, or put a cached kjv/kjv.txt under --data-dir") from None
    try:
        chapters = kjv_chapters(raw)
    except ValueError as err:
        raise DataError(f"`bible {KJV_RANGE}` printed an unexpected text ({err}); "
                        f"reinstall it: apt-get install --reinstall bible-kjv bible-kjv-text") from None
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        results.write_bytes(cache, raw)  # every rank may write at once: each through its own temporary
    except OSError as err:
        raise DataError(f"cannot write the KJV cache {cache} ({err}); pass a writable --data-dir") from None
    return chapters


def units(name_or_file: str, data_dir: str | os.PathLike) -> list[bytes]:
    """The corpus as its units, in reading order: KJV chapters, or a file's blocks of lines."""
    if name_or_file == "kjv":
        return kjv(data_dir)
    return line_blocks(load_text_file(name_or_file).encode("utf-8"))


def load(name_or_file: str, data_dir: str | os.PathLike, seq_len: int, train: bool, subset: int = 0,
         min_examples: int = 1) -> Split:
    """The training or held-out chunks of the corpus ('kjv' or a file's path); with subset > 0, the
    first `subset` of them. `min_examples` (the caller's number of workers) is the fewest chunks the
    split may hold."""
    if seq_len < 1:
        raise DataError(f"--seq-len {seq_len}: a chunk needs at least one target; pass a positive length")
    split = chunk(split_units(units(name_or_file, data_dir), train), seq_len)
    which = "training" if train else f"held-out (every {HELD_OUT_EVERY}th unit)"
    if len(split) < max(min_examples, 1):
        flag = "--dataset kjv" if name_or_file == "kjv" else f"--text-file {name_or_file}"
        raise DataError(f"the {which} text of {flag} holds {len(split)} chunks of {seq_len + 1} "
                        f"bytes, fewer than one per worker ({min_examples}); use a longer text, a smaller "
                        f"--seq-len, or fewer workers")
    if subset:
        if subset > len(split):
            flag = "--subset" if train else "--test-subset"
            raise DataError(f"{flag} {subset} exceeds the {len(split)} {which} chunks of {name_or_file}; "
                            f"pass at most {len(split)}")
        split = Split(split.tokens[:subset].clone(), split.dropped)
    corpus = f"the King James Bible ({Path(data_dir, 'kjv', 'kjv.txt')})" if name_or_file == "kjv" else name_or_file
    return Split(split.tokens, split.dropped, f"{corpus}, {which} chunks")
