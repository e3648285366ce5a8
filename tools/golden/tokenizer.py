"""Golden vectors for GPT-2's byte-level BPE from the ``tokenizers`` library (0.23.3).

1. Trains a ``tokenizers.ByteLevelBPETokenizer`` (GPT-2's pre-tokenizer, byte alphabet) on
   ``tests/golden/tokenizer/corpus.txt`` (a few paragraphs of the blog, English prose and Python code) and
   writes its ``vocab.json``, ``merges.txt`` and ``tokenizer.json`` next to it.
2. Encodes :data:`TEXTS` (English, code, Chinese, emoji, whitespace runs, contractions, other scripts and
   number systems) with the tokenizer read back from ``vocab.json`` + ``merges.txt`` and stores the ids. The
   same ids must come from ``GPT2TokenizerFast.from_pretrained`` on a directory holding only those two files,
   and from ``tokenizer.json``: asserted here. (In transformers 5, ``GPT2TokenizerFast(vocab_file=...,
   merges_file=...)`` ignores the two file arguments and encodes everything to no ids: docs/facts.md §9.)
3. Classifies every code point the way the library's pre-tokenizer does — letter (``\\p{L}``), number
   (``\\p{N}``), whitespace (``\\s``) or other — by how it joins a neighbour, so the test can check
   minilora's standard-library pattern class by class.

Output: ``tests/golden/tokenizer.npz`` with ``texts`` (str array), ``ids`` (all ids, int32), ``offsets`` (text i
is ``ids[offsets[i]:offsets[i+1]]``), ``classes`` (uint8 per code point 0..0x10FFFF: 0 other, 1 letter,
2 number, 3 whitespace, 255 surrogate) and provenance.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np

from golden._meta import meta

ROOT = Path(__file__).resolve().parents[2]
TOK_DIR = ROOT / "tests" / "golden" / "tokenizer"
VOCAB_SIZE = 400

TEXTS = [
    "Hello world! This is a test of GPT-2's tokenizer.",
    "I'm sure they'll say it's fine; we're done, you've seen it, he'd agree. DON'T SHOUT, I'LL listen.",
    "LoRA freezes W0 and learns B A; QLoRA stores W0 in 4-bit NormalFloat (NF4) with double quantization.",
    "def f(x):\n    return x ** 2  # square\n\n\nclass A:\n\tpass\n",
    "for (int i = 0; i < n; ++i) { y[i] = a*x[i] + b; }  // axpy",
    "__init__ __main__ foo_bar_baz snake_case CamelCase kebab-case",
    "微调需要针对每个下游任务来进行，同时微调后的模型和原始模型是一样大的。",
    "量化的本质实际是从一种数据类型舍入到另一种数据类型，通常包含量化和反量化两步。",
    "emoji: 😀 👍🏽 👨‍👩‍👧‍👦 🇫🇷🇯🇵 ❤️ 🤖🧠 ✨",
    "   leading spaces, trailing spaces   ",
    "runs:  two,   three,\t\ttabs,\n\n\nnewlines,\r\nCRLF, \u00a0nbsp\u00a0, \u3000ideographic\u3000space",
    "separators \x1c\x1d\x1e\x1f and \u0085 NEL and \u2028 LS \u2029 PS and \u200b ZWSP \ufeff BOM",
    "numbers 2024 3.14159 1e-5 ²³ ½ ¾ Ⅻ ٣٤٥ ४२ 一二三 𝟙𝟚",
    "accents: café naïve résumé, combining e\u0301 a\u0308; हिन्दी; العربية; 日本語のテキスト; 한국어",
    "punctuation!!! ??? ... --- *** ''quoted'' \"double\" «guillemets» —dash— …ellipsis",
    "",
    " ",
    "\n",
    "a",
    "x" * 40 + " " + "ab" * 20,
]
CLASS_OTHER, CLASS_LETTER, CLASS_NUMBER, CLASS_SPACE, CLASS_SURROGATE = 0, 1, 2, 3, 255


def classify(pre_tokenize) -> np.ndarray:
    """The class of every code point under the library's pre-tokenizer (see the module docstring)."""
    classes = np.full(0x110000, CLASS_OTHER, dtype=np.uint8)
    for cp in range(0x110000):
        if 0xD800 <= cp <= 0xDFFF:
            classes[cp] = CLASS_SURROGATE
            continue
        c = chr(cp)
        if len(pre_tokenize("x" + c)) == 1:
            classes[cp] = CLASS_LETTER
        elif len(pre_tokenize("1" + c)) == 1:
            classes[cp] = CLASS_NUMBER
        elif len(pre_tokenize("\t" + c + "\t")) == 1:  # one whitespace run
            classes[cp] = CLASS_SPACE
    return classes


def make(out_dir: Path) -> list[Path]:
    from tokenizers import ByteLevelBPETokenizer, Tokenizer, pre_tokenizers
    from transformers import GPT2TokenizerFast

    trainer = ByteLevelBPETokenizer()
    trainer.train([str(TOK_DIR / "corpus.txt")], vocab_size=VOCAB_SIZE, min_frequency=2,
                  special_tokens=["<|endoftext|>"], show_progress=False)
    trainer.save_model(str(TOK_DIR))  # vocab.json + merges.txt
    trainer.save(str(TOK_DIR / "tokenizer.json"))
    ref = ByteLevelBPETokenizer.from_file(str(TOK_DIR / "vocab.json"), str(TOK_DIR / "merges.txt"))
    with tempfile.TemporaryDirectory() as tmp:  # a directory with only vocab.json + merges.txt, as a user has
        for name in ("vocab.json", "merges.txt"):
            shutil.copy(TOK_DIR / name, tmp)
        fast = GPT2TokenizerFast.from_pretrained(tmp)
    from_json = Tokenizer.from_file(str(TOK_DIR / "tokenizer.json"))
    texts = TEXTS + [(TOK_DIR / "chinese.txt").read_text(encoding="utf-8"),
                     (TOK_DIR / "corpus.txt").read_text(encoding="utf-8")]
    ids, offsets = [], [0]
    for t in texts:
        e = ref.encode(t).ids
        assert fast(t)["input_ids"] == e, f"GPT2TokenizerFast differs on {t[:30]!r}"
        assert from_json.encode(t).ids == e, f"tokenizer.json differs on {t[:30]!r}"
        assert ref.decode(e) == t, f"no round trip on {t[:30]!r}"
        ids += e
        offsets.append(len(ids))
    bl = pre_tokenizers.ByteLevel(add_prefix_space=False)
    classes = classify(lambda s: bl.pre_tokenize_str(s))
    path = out_dir / "tokenizer.npz"
    np.savez_compressed(path, texts=np.array(texts), ids=np.array(ids, dtype=np.int32),
                        offsets=np.array(offsets, dtype=np.int64), classes=classes,
                        vocab_size=np.array(ref.get_vocab_size()), **meta("tools/golden/tokenizer.py"))
    print(f"vocab {ref.get_vocab_size()} tokens, {len(ids)} golden ids", file=sys.stderr)
    return [path, TOK_DIR / "vocab.json", TOK_DIR / "merges.txt", TOK_DIR / "tokenizer.json"]
