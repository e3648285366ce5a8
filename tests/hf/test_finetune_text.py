"""Fine-tuning a GPT-2 checkpoint on a text file, and quant-eval, through the CLI (tests/golden/gpt2_tiny)."""

import json

import numpy as np
import pytest
from conftest import GOLDEN

from minilora.__main__ import main
from minilora.experiments.gpt2 import finetune_text, load_text, split_blocks, text_blocks
from minilora.nn.gpt import GPT
from minilora.tokenizer import GPT2Tokenizer

TINY = GOLDEN / "gpt2_tiny"


@pytest.fixture
def text_file(tmp_path):
    text = "".join((GOLDEN / "tokenizer" / name).read_text(encoding="utf-8") for name in ("corpus.txt", "chinese.txt"))
    path = tmp_path / "train.txt"
    path.write_text(text * 2, encoding="utf-8")
    return path


def test_blocks_cover_every_token_once():
    ids = np.arange(23)
    x, y = text_blocks(ids, 5)
    assert x.shape == y.shape == (4, 5)
    np.testing.assert_array_equal(y, x + 1)  # each target is the next token
    tx, ty, hx, hy = split_blocks(x, y)
    assert len(hx) == 1 and len(tx) == 3 and (hx == x[-1:]).all()


def test_load_text_needs_two_blocks(tmp_path):
    tok = GPT2Tokenizer.from_pretrained(TINY)
    short = tmp_path / "short.txt"
    short.write_text("just a few words", encoding="utf-8")
    n = len(tok.encode("just a few words"))
    with pytest.raises(ValueError, match=rf"short.txt encodes to {n} tokens, fewer than the 65 that two blocks of "
                                         r"--block-size 32 need"):
        load_text(short, tok, 32)
    (tmp_path / "latin1.txt").write_bytes("café".encode("latin-1"))
    with pytest.raises(ValueError, match="not UTF-8"):
        load_text(tmp_path / "latin1.txt", tok, 4)
    with pytest.raises(ValueError, match="no such file"):
        load_text(tmp_path / "nope.txt", tok, 4)


@pytest.mark.parametrize("method", ["lora", "qlora", "full"])
def test_finetune_lowers_the_heldout_loss(method, text_file):
    model = GPT.from_pretrained(TINY)
    data = load_text(text_file, GPT2Tokenizer.from_pretrained(TINY), 32)
    lr = {"lora": 1e-2, "qlora": 1e-2, "full": 1e-3}[method]
    model, report = finetune_text(model, data, method, steps=15, lr=lr, batch_size=4)
    assert report["loss_after"] < report["loss_before"]
    assert report["ppl_after"] == pytest.approx(np.exp(report["loss_after"]))
    assert report["trainable"] < report["total"] or method == "full"
    assert report["tokens_per_s"] > 0 and report["peak_rss"] > 0


def test_cli_lora_with_save(text_file, tmp_path, capsys):
    out_dir = tmp_path / "adapter"
    rc = main(["finetune", "--base", str(TINY), "--text", str(text_file), "--method", "lora", "--steps", "5",
               "--block-size", "32", "--batch-size", "4", "--save", str(out_dir)])
    out = capsys.readouterr().out
    assert rc == 0, out
    for needle in ("trainable params:", "held-out loss", "perplexity", "tokens/s", "peak memory"):
        assert needle in out
    cfg = json.loads((out_dir / "adapter_config.json").read_text())
    assert cfg["target_modules"] == ["c_attn"] and cfg["fan_in_fan_out"] is True and cfg["r"] == 16


def test_cli_full_saves_a_checkpoint_with_its_tokenizer(text_file, tmp_path, capsys):
    out_dir = tmp_path / "full"
    rc = main(["finetune", "--base", str(TINY), "--text", str(text_file), "--method", "full", "--steps", "2",
               "--block-size", "16", "--batch-size", "2", "--save", str(out_dir)])
    assert rc == 0, capsys.readouterr()
    again = GPT.from_pretrained(out_dir)
    assert again.config.tie_word_embeddings and GPT2Tokenizer.from_pretrained(out_dir).vocab_size == 400


def test_cli_errors(text_file, tmp_path, capsys):
    short = tmp_path / "short.txt"
    short.write_text("hi", encoding="utf-8")
    assert main(["finetune", "--base", str(TINY), "--text", str(short), "--block-size", "8"]) == 2
    assert "fewer than the 17" in capsys.readouterr().err
    assert main(["finetune", "--base", str(TINY)]) == 2
    assert "--base needs --text" in capsys.readouterr().err
    assert main(["finetune", "--base", str(tmp_path), "--text", str(text_file)]) == 2
    assert "no config.json" in capsys.readouterr().err
    assert main(["finetune", "--base", str(TINY), "--text", str(text_file), "--block-size", "65"]) == 2
    assert "--block-size must be in [1, n_positions=64]" in capsys.readouterr().err


def test_cli_quant_eval(text_file, capsys):
    rc = main(["quant-eval", "--base", str(TINY), "--text", str(text_file), "--block-size", "32"])
    out = capsys.readouterr().out
    assert rc == 0, out
    for label in ("FP32", "BF16", "FP16", "Int8 absmax", "LLM.int8()", "Int4 absmax", "FP4", "NF4 + DQ"):
        assert label in out
    assert "QLoRA's ordering NF4 < FP4 < Int4" in out


def test_cli_qlora_reports_the_4bit_base(text_file, capsys):
    rc = main(["finetune", "--base", str(TINY), "--text", str(text_file), "--method", "qlora", "--steps", "2",
               "--block-size", "16", "--batch-size", "2"])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "4-bit base: 24,576 more parameters in 12 linear layers (nf4," in out  # 2 blocks x 6 Linears
