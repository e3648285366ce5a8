"""minilora.tokenizer against the ``tokenizers`` library's byte-level BPE (golden ids, tools/golden/tokenizer.py)."""

import json
import time
import unicodedata

import numpy as np
import pytest
from conftest import GOLDEN, load_golden
from hypothesis import given
from hypothesis import strategies as st

from minilora.tokenizer import GPT2Tokenizer, bytes_to_unicode, gpt2_pattern, unicode_classes

TOK_DIR = GOLDEN / "tokenizer"
CLASS_OTHER, CLASS_LETTER, CLASS_NUMBER, CLASS_SPACE = 0, 1, 2, 3


@pytest.fixture(scope="module")
def gold():
    return load_golden("tokenizer")


@pytest.fixture(scope="module")
def tok():
    return GPT2Tokenizer.from_pretrained(TOK_DIR)


def golden_cases(gold):
    texts, ids, off = gold["texts"], gold["ids"], gold["offsets"]
    return [(str(t), ids[off[i]:off[i + 1]].tolist()) for i, t in enumerate(texts)]


def test_ids_equal_tokenizers_library(tok, gold):
    cases = golden_cases(gold)
    assert len(cases) >= 20
    for text, ids in cases:
        assert tok.encode(text) == ids, f"ids differ on {text[:40]!r}"


def test_tokenizer_json_gives_the_same_ids(tok, gold):
    from_json = GPT2Tokenizer.from_tokenizer_json(TOK_DIR / "tokenizer.json")
    assert from_json.vocab_size == tok.vocab_size == int(gold["vocab_size"])
    for text, ids in golden_cases(gold):
        assert from_json.encode(text) == ids


def test_decode_inverts_the_golden_ids(tok, gold):
    for text, ids in golden_cases(gold):
        assert tok.decode(ids) == text


def test_golden_texts_cover_the_hard_cases(gold):
    joined = "".join(str(t) for t in gold["texts"])
    for needle in ("微调", "👨\u200d👩", "\t\t", "\n\n\n", "\u3000", "\x1c", "'ll", "DON'T", "²", "e\u0301", "def "):
        assert needle in joined


def test_character_classes_equal_the_librarys(gold):
    """\\p{L}, \\p{N} and \\s built from unicodedata equal the library's classes on every assigned code point."""
    classes = gold["classes"]
    letters, numbers = unicode_classes()
    mine = np.zeros(0x110000, np.uint8)
    mine[letters], mine[numbers] = CLASS_LETTER, CLASS_NUMBER
    mine[[0x09, 0x0A, 0x0B, 0x0C, 0x0D, 0x20, 0x85, 0xA0, 0x1680, *range(0x2000, 0x200B), 0x2028, 0x2029,
          0x202F, 0x205F, 0x3000]] = CLASS_SPACE
    assigned = np.array([unicodedata.category(chr(c)) not in ("Cn", "Cs") for c in range(0x110000)])
    diff = np.flatnonzero(assigned & (mine != classes))
    assert diff.size == 0, f"{diff.size} code points differ, first {[hex(c) for c in diff[:5]]}"
    assert assigned.sum() > 280_000  # Unicode 14: 282,230 assigned, non-surrogate code points


@pytest.mark.parametrize("text, pieces", [
    ("Hello world's", ["Hello", " world", "'s"]),
    ("a  b", ["a", " ", " b"]),  # \s+(?!\S) leaves the last space to the word
    ("x   \n", ["x", "   \n"]),
    ("foo_bar", ["foo", "_", "bar"]),  # \w would have taken the underscore
    ("x²", ["x", "²"]),  # ² is a number (No), not a letter
    ("a\x1cb", ["a", "\x1c", "b"]),  # \x1c is no White_Space, but Python's \s has it
    ("I'LL", ["I", "'", "LL"]),  # contractions are lowercase only
])
def test_pretokenization_pieces(text, pieces):
    assert gpt2_pattern().findall(text) == pieces


def test_byte_table_is_a_bijection_onto_printable_characters():
    table = bytes_to_unicode()
    assert sorted(table) == list(range(256)) and len(set(table.values())) == 256
    assert all(ch.isprintable() and not ch.isspace() for ch in table.values())


@given(st.text(max_size=200))
def test_round_trip_on_any_text(text):
    tok = GPT2Tokenizer.from_pretrained(TOK_DIR)
    assert tok.decode(tok.encode(text)) == text


def test_encoding_a_megabyte_takes_seconds(tok):
    text = (TOK_DIR / "corpus.txt").read_text(encoding="utf-8") + (TOK_DIR / "chinese.txt").read_text("utf-8")
    big = (text * (1_000_000 // len(text.encode()) + 1))
    t0 = time.perf_counter()
    ids = tok.encode(big)
    seconds = time.perf_counter() - t0
    assert tok.decode(ids) == big
    assert seconds < 30, f"1 MB took {seconds:.1f} s"  # a generous bound: about 1 s on one core


def test_save_pretrained_round_trip(tok, tmp_path, gold):
    again = GPT2Tokenizer.from_pretrained(tok.save_pretrained(tmp_path))
    for text, ids in golden_cases(gold):
        assert again.encode(text) == ids


def test_repr_and_eot(tok):
    assert tok.eot_token == tok.encoder["<|endoftext|>"]
    assert "vocab_size=400" in repr(tok)


# ----------------------------------------------------------------------------- bad input
def write(tmp_path, vocab, merges):
    (tmp_path / "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
    (tmp_path / "merges.txt").write_text(merges, encoding="utf-8")
    return tmp_path


def byte_vocab():
    return {ch: i for i, ch in enumerate(bytes_to_unicode().values())}


def test_merge_with_unknown_token_names_the_file(tmp_path):
    write(tmp_path, byte_vocab(), "#version: 0.2\na b\n")
    with pytest.raises(ValueError, match=r"merges.txt.*merge 1 \('a' 'b'\) uses 'ab'"):
        GPT2Tokenizer.from_pretrained(tmp_path)


def test_malformed_merge_line_names_the_line(tmp_path):
    vocab = {**byte_vocab(), "ab": 256}
    write(tmp_path, vocab, "#version: 0.2\na b\nabc\n")
    with pytest.raises(ValueError, match=r"merges.txt, line 3"):
        GPT2Tokenizer.from_pretrained(tmp_path)


def test_vocab_without_all_bytes_is_refused(tmp_path):
    vocab = byte_vocab()
    del vocab["Ġ"]
    write(tmp_path, vocab, "")
    with pytest.raises(ValueError, match="lacks 1 of the 256 byte tokens"):
        GPT2Tokenizer.from_pretrained(tmp_path)


def test_bad_json_and_missing_files(tmp_path):
    (tmp_path / "vocab.json").write_text("{not json", encoding="utf-8")
    (tmp_path / "merges.txt").write_text("", encoding="utf-8")
    with pytest.raises(ValueError, match=r"vocab.json: not valid JSON"):
        GPT2Tokenizer.from_pretrained(tmp_path)
    with pytest.raises(FileNotFoundError, match="needs vocab.json"):
        GPT2Tokenizer.from_pretrained(tmp_path / "nowhere")


def test_unknown_id_and_bad_text(tok):
    with pytest.raises(ValueError, match="token id 99999"):
        tok.decode([1, 99999])
    with pytest.raises(TypeError, match="text must be a str"):
        tok.encode(b"bytes")
