"""``python -m minilora finetune`` on a tiny stand-in base model (fast; the shipped one is bigger)."""

import json

import pytest

import minilora
from minilora.__main__ import main
from minilora.data import N_DIGITS, VOCAB_SIZE
from minilora.nn.gpt import GPT, GPTConfig

pytest.importorskip("safetensors")


@pytest.fixture
def tiny_base(monkeypatch):
    cfg = GPTConfig(vocab_size=VOCAB_SIZE, block_size=2 * N_DIGITS + 1, n_layer=1, n_head=2, n_embd=16)
    monkeypatch.setattr(minilora, "load_base_model", lambda: GPT(cfg, seed=0), raising=False)


def test_finetune_lora(tiny_base, tmp_path, capsys):
    assert (
        main(
            [
                "finetune",
                "--method",
                "lora",
                "--r",
                "2",
                "--alpha",
                "4",
                "--targets",
                "all-linear",
                "--steps",
                "3",
                "--save",
                str(tmp_path),
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    lora_params = 4 * 2 * (16 + 16) + 2 * 2 * (16 + 64)  # q, k, v, o (16→16) and up/down (16↔64), r = 2
    assert f"trainable params: {lora_params:,d} || all params:" in out
    assert "adapter:" in out and "held-out task exact match:" in out and "before ->" in out
    cfg = json.loads((tmp_path / "adapter_config.json").read_text())
    assert cfg["r"] == 2 and cfg["lora_alpha"] == 4
    assert sorted(cfg["target_modules"]) == ["down_proj", "k_proj", "o_proj", "q_proj", "up_proj", "v_proj"]


def test_finetune_full(tiny_base, capsys):
    assert main(["finetune", "--method", "full", "--steps", "2"]) == 0
    out = capsys.readouterr().out
    assert "trainable%: 100.0000" in out and "fine-tuned copy:" in out


def test_finetune_bad_arguments(tiny_base, capsys):
    assert main(["finetune", "--r", "0", "--steps", "1"]) == 2
    assert "r must be" in capsys.readouterr().err
    assert main(["finetune", "--targets", "nope", "--steps", "1"]) == 2
    assert "matches no Linear" in capsys.readouterr().err
