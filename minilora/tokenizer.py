"""GPT-2's tokenizer: byte-level byte-pair encoding (Radford et al. 2019, §2.2; Sennrich et al. 2016).

Three steps turn text into token ids, and their inverse turns ids back into the same text:

1. **pre-tokenize** — GPT-2's regular expression cuts the text into pieces (a word with its leading space,
   a number, a run of punctuation, a run of whitespace); merges never cross a piece boundary;
2. **bytes as characters** — each piece's UTF-8 bytes become printable characters through a fixed
   byte↔unicode table (:func:`bytes_to_unicode`), so *any* text is representable with 256 base tokens and
   nothing is ever unknown;
3. **merge** — repeatedly merge the adjacent pair with the lowest rank in ``merges.txt`` (rank = line
   number: the order the merges were learned in) until no listed pair is left; look the pieces up in
   ``vocab.json``.

Decoding concatenates the tokens' characters, maps them back to bytes and decodes UTF-8, so
``decode(encode(text)) == text`` for every string (``tests/hf/test_tokenizer.py`` checks it by property).

The pattern without the ``regex`` package
-----------------------------------------
GPT-2's pattern is ``'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+``.
The standard library's ``re`` has no ``\\p{..}`` classes, and its ``\\w``/``\\d``/``\\s`` are not the same
sets (``\\w`` includes ``_`` and ``²``; ``\\s`` includes the separators U+001C–U+001F). So
:func:`gpt2_pattern` writes the three classes out as explicit code-point ranges, built once from
:mod:`unicodedata`: ``\\p{L}`` = general categories Lu Ll Lt Lm Lo, ``\\p{N}`` = Nd Nl No, and ``\\s`` =
Unicode's White_Space property (:data:`WHITESPACE`, the 25 code points of PropList.txt). Both engines
are backtracking engines with the same alternation semantics (leftmost alternative that matches), so
the pieces are the same; golden ids from the ``tokenizers`` library check it on English, code, Chinese,
emoji and whitespace runs. Characters assigned after Python's Unicode version
(``unicodedata.unidata_version``) are classified as unassigned, i.e. punctuation-like.

Left out: special tokens are not split out of the text (``encode`` treats ``<|endoftext|>`` in the text as
ordinary characters, as tiktoken's ``encode_ordinary``); use :attr:`GPT2Tokenizer.eot_token` to
separate documents. No BPE dropout, no ``add_prefix_space``.
"""

from __future__ import annotations

import json
import os
import re
import unicodedata
from functools import lru_cache
from pathlib import Path

#: Unicode's White_Space property (PropList.txt): what ``\s`` means in GPT-2's pattern
WHITESPACE = (0x09, 0x0A, 0x0B, 0x0C, 0x0D, 0x20, 0x85, 0xA0, 0x1680, *range(0x2000, 0x200B), 0x2028, 0x2029,
              0x202F, 0x205F, 0x3000)
CONTRACTIONS = ("'s", "'t", "'re", "'ve", "'m", "'ll", "'d")


@lru_cache(maxsize=1)
def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's table from the 256 byte values to printable characters.

    Printable Latin-1 bytes (``!``..``~``, ``¡``..``¬``, ``®``..``ÿ``) stand for themselves; the other 68
    bytes (controls, space, soft hyphen) are shifted to U+0100 onwards, in byte order. So a space is
    ``Ġ`` (U+0120) and a newline ``Ċ`` (U+010A):

    >>> t = bytes_to_unicode()
    >>> t[ord("a")], t[ord(" ")], t[ord("\\n")], len(set(t.values()))
    ('a', 'Ġ', 'Ċ', 256)
    """
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    table, shift = {}, 0
    for b in range(256):
        if b in printable:
            table[b] = chr(b)
        else:
            table[b] = chr(256 + shift)
            shift += 1
    return table


def _ranges(codepoints) -> str:
    """Code points as a regex class body of ``\\UXXXXXXXX`` ranges (``[a-c]`` style, escaped)."""
    out, points = [], sorted(codepoints)
    start = prev = points[0]
    for cp in [*points[1:], None]:
        if cp is not None and cp == prev + 1:
            prev = cp
            continue
        out.append(f"\\U{start:08X}" if start == prev else f"\\U{start:08X}-\\U{prev:08X}")
        if cp is not None:
            start = prev = cp
    return "".join(out)


@lru_cache(maxsize=1)
def unicode_classes() -> tuple[list[int], list[int]]:
    """The code points of ``\\p{L}`` (categories L*) and ``\\p{N}`` (categories N*), from :mod:`unicodedata`."""
    letters, numbers = [], []
    for cp in range(0x110000):
        cat = unicodedata.category(chr(cp))
        if cat[0] == "L":
            letters.append(cp)
        elif cat[0] == "N":
            numbers.append(cp)
    return letters, numbers


@lru_cache(maxsize=1)
def gpt2_pattern() -> re.Pattern:
    """GPT-2's pre-tokenization pattern compiled with the standard library (see the module docstring).

    >>> gpt2_pattern().findall("Hello world's 2024  code!!\\n")
    ['Hello', ' world', "'s", ' 2024', ' ', ' code', '!!', '\\n']
    """
    letters, numbers = unicode_classes()
    L, N, S = _ranges(letters), _ranges(numbers), _ranges(WHITESPACE)
    pattern = "|".join([*CONTRACTIONS, f" ?[{L}]+", f" ?[{N}]+", f" ?[^{S}{L}{N}]+", f"[{S}]+(?![^{S}])",
                        f"[{S}]+"])
    return re.compile(pattern)


def get_pairs(word: list[str]) -> set[tuple[str, str]]:
    """The adjacent pairs of a word: ``["a", "b", "c"]`` -> ``{("a", "b"), ("b", "c")}``."""
    return set(zip(word, word[1:]))


def merge_pair(word: list[str], pair: tuple[str, str]) -> list[str]:
    """Merge every occurrence of ``pair`` in ``word``, left to right.

    >>> merge_pair(["a", "a", "a", "b"], ("a", "a"))
    ['aa', 'a', 'b']
    """
    out, i = [], 0
    while i < len(word):
        if i + 1 < len(word) and (word[i], word[i + 1]) == pair:
            out.append(word[i] + word[i + 1])
            i += 2
        else:
            out.append(word[i])
            i += 1
    return out


class GPT2Tokenizer:
    """Byte-level BPE with GPT-2's pre-tokenization: ``encode(text) -> list[int]``, ``decode(ids) -> str``.

    Parameters
    ----------
    vocab : dict str -> int
        Token (in byte-as-character form) to id, as in ``vocab.json``; must hold all 256 byte characters.
    merges : list of (str, str)
        The merges in rank order, as in ``merges.txt``; each part and each result must be in ``vocab``.
    source : str
        Where they came from, named in error messages.

    Encoding memoizes each distinct piece, so a few MB of text encode in seconds (``benchmarks/`` has no
    figure for it: ``tests/hf/test_tokenizer.py`` encodes 1 MB within a generous bound).
    """

    def __init__(self, vocab: dict[str, int], merges: list[tuple[str, str]], source: str = "<memory>") -> None:
        self.encoder = dict(vocab)
        self.decoder = {i: t for t, i in self.encoder.items()}
        if len(self.decoder) != len(self.encoder):
            raise ValueError(f"{source}: vocab maps two tokens to the same id")
        missing = [b for b, ch in bytes_to_unicode().items() if ch not in self.encoder]
        if missing:
            raise ValueError(f"{source}: the vocabulary lacks {len(missing)} of the 256 byte tokens (first: byte "
                             f"{missing[0]}, {bytes_to_unicode()[missing[0]]!r}); a byte-level BPE needs all")
        self.ranks: dict[tuple[str, str], int] = {}
        for rank, (a, b) in enumerate(merges):
            for part in (a, b, a + b):
                if part not in self.encoder:
                    raise ValueError(f"{source}: merge {rank + 1} ({a!r} {b!r}) uses {part!r}, which is not in "
                                     f"the vocabulary")
            self.ranks.setdefault((a, b), rank)
        self.byte_encoder = bytes_to_unicode()
        self.byte_decoder = {ch: b for b, ch in self.byte_encoder.items()}
        self.source = source
        self.cache: dict[str, list[int]] = {}

    # ------------------------------------------------------------------ files
    @classmethod
    def from_files(cls, vocab_file: str | os.PathLike, merges_file: str | os.PathLike) -> GPT2Tokenizer:
        """Read ``vocab.json`` and ``merges.txt`` (``#version`` header line optional)."""
        vocab = _read_json(Path(vocab_file))
        if not isinstance(vocab, dict) or not all(isinstance(v, int) for v in vocab.values()):
            raise ValueError(f"{vocab_file}: must hold a JSON object mapping tokens to integer ids")
        merges = []
        lines = Path(merges_file).read_text(encoding="utf-8").split("\n")
        for n, line in enumerate(lines, 1):
            if (n == 1 and line.startswith("#version")) or not line.strip():
                continue
            parts = line.split(" ")
            if len(parts) != 2 or not all(parts):
                raise ValueError(f"{merges_file}, line {n}: a merge is two tokens separated by one space, "
                                 f"got {line!r}")
            merges.append((parts[0], parts[1]))
        tok = cls(vocab, merges, source=f"{merges_file} (with {Path(vocab_file).name})")
        return tok

    @classmethod
    def from_tokenizer_json(cls, path: str | os.PathLike) -> GPT2Tokenizer:
        """Read a ``tokenizer.json`` (the ``tokenizers`` library's file) holding a byte-level BPE model."""
        raw = _read_json(Path(path))
        model = raw.get("model") if isinstance(raw, dict) else None
        if not isinstance(model, dict) or model.get("type") != "BPE":
            got = model.get("type") if isinstance(model, dict) else model
            raise ValueError(f"{path}: model.type must be 'BPE', got {got!r}")
        pre = json.dumps(raw.get("pre_tokenizer"))
        if "ByteLevel" not in pre:
            raise ValueError(f"{path}: pre_tokenizer must be ByteLevel (GPT-2's), got {pre}")
        for key in ("dropout", "continuing_subword_prefix", "end_of_word_suffix"):
            if model.get(key):
                raise ValueError(f"{path}: model.{key}={model[key]!r} is not supported (GPT-2 has none)")
        merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in model.get("merges", [])]
        bad = [m for m in merges if len(m) != 2]
        if bad:
            raise ValueError(f"{path}: each merge must be two tokens, got {bad[0]!r}")
        vocab = dict(model.get("vocab", {}))
        for added in raw.get("added_tokens") or []:
            vocab.setdefault(added["content"], added["id"])
        return cls(vocab, merges, source=str(path))

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike) -> GPT2Tokenizer:
        """The tokenizer of a checkpoint directory: ``vocab.json`` + ``merges.txt``, else ``tokenizer.json``."""
        path = Path(path)
        if (path / "vocab.json").is_file() and (path / "merges.txt").is_file():
            return cls.from_files(path / "vocab.json", path / "merges.txt")
        if (path / "tokenizer.json").is_file():
            return cls.from_tokenizer_json(path / "tokenizer.json")
        found = sorted(p.name for p in path.iterdir()) if path.is_dir() else []
        raise FileNotFoundError(f"{path}: no tokenizer: needs vocab.json + merges.txt or tokenizer.json "
                                f"(found: {', '.join(found) or 'nothing'})")

    def save_pretrained(self, path: str | os.PathLike) -> Path:
        """Write ``vocab.json`` and ``merges.txt`` into the directory ``path`` (created); return it."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        (path / "vocab.json").write_text(json.dumps(self.encoder, ensure_ascii=False), encoding="utf-8")
        merges = sorted(self.ranks, key=self.ranks.get)
        (path / "merges.txt").write_text("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges),
                                         encoding="utf-8")
        return path

    # ------------------------------------------------------------------ the algorithm
    def bpe(self, piece: str) -> list[str]:
        """Merge the characters of one piece (already byte-mapped) by rank, lowest first.

        A piece of one character is returned as it is; otherwise, while some adjacent pair is a listed
        merge, the pair of lowest rank is merged everywhere in the piece.
        """
        word = list(piece)
        while len(word) > 1:
            pair = min(get_pairs(word), key=lambda p: self.ranks.get(p, float("inf")))
            if pair not in self.ranks:
                break
            word = merge_pair(word, pair)
        return word

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text`` (any ``str``); special tokens in the text are treated as ordinary text."""
        if not isinstance(text, str):
            raise TypeError(f"text must be a str, got {type(text).__name__}")
        ids: list[int] = []
        for piece in gpt2_pattern().findall(text):
            cached = self.cache.get(piece)
            if cached is None:
                mapped = "".join(self.byte_encoder[b] for b in piece.encode("utf-8"))
                cached = self.cache[piece] = [self.encoder[t] for t in self.bpe(mapped)]
            ids.extend(cached)
        return ids

    def decode(self, ids) -> str:
        """The text of ``ids``; byte sequences that are not valid UTF-8 become U+FFFD (as GPT-2 does)."""
        try:
            chars = "".join(self.decoder[int(i)] for i in ids)
        except KeyError as err:
            raise ValueError(f"token id {err.args[0]} is not in the vocabulary [0, {self.vocab_size})") from None
        return bytes(self.byte_decoder[c] for c in chars).decode("utf-8", errors="replace")

    @property
    def vocab_size(self) -> int:
        return max(self.decoder) + 1

    @property
    def eot_token(self) -> int | None:
        """The id of ``<|endoftext|>`` (GPT-2's document separator), or None without one."""
        return self.encoder.get("<|endoftext|>")

    def __repr__(self) -> str:
        return (f"GPT2Tokenizer(vocab_size={self.vocab_size}, merges={len(self.ranks)}, "
                f"eot_token={self.eot_token}, source={self.source!r})")


def _read_json(path: Path):
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, ValueError) as err:
        raise ValueError(f"{path}: not valid JSON ({err})") from None


__all__ = ["GPT2Tokenizer", "WHITESPACE", "bytes_to_unicode", "get_pairs", "gpt2_pattern", "merge_pair",
           "unicode_classes"]
