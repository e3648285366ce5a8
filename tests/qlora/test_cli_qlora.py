"""``python -m minilora finetune --method qlora`` prints the memory table, PEFT's counts, and saves the adapter."""

import json

import pytest

import minilora
from minilora.__main__ import main
from minilora.data import accuracy, heldout_eval_batch
from minilora.peft import LoraConfig, count_parameters, inject_lora, load_adapter, prepare_qlora


def test_finetune_qlora_prints_memory_table(capsys):
    assert main(["finetune", "--method", "qlora", "--steps", "2", "--batch-size", "4"]) == 0
    out = capsys.readouterr().out
    assert "method: qlora" in out and "targets=all-linear" in out
    header = [line for line in out.splitlines() if line.startswith("method ")]
    assert len(header) == 2 and header[0].split()[1:4] == ["weights", "gradients", "optimizer"]
    rows = {line.split()[0] for line in out.splitlines()}
    assert {"full", "lora", "qlora", "full_16bit"} <= rows
    assert "bits per parameter measured" in out


def test_finetune_qlora_counts_like_lora_in_one_line(capsys):
    """QLoRA printed "trainable%: 75.79" (4-bit weights uncounted) and a second "corrected" line."""
    assert main(["finetune", "--method", "qlora", "--steps", "1", "--batch-size", "4"]) == 0
    out = capsys.readouterr().out
    config = LoraConfig(r=8, lora_alpha=16, target_modules="all-linear")
    trainable, total = count_parameters(inject_lora(minilora.load_base_model(), config))
    lines = [line for line in out.splitlines() if "trainable%" in line]
    assert lines == [f"trainable params: {trainable:,d} || all params: {total:,d} || "
                     f"trainable%: {100 * trainable / total:.4f}"]
    assert "counting the" not in out


def test_finetune_qlora_save_writes_a_lora_adapter(tmp_path, capsys):
    """--method qlora --save DIR was ignored silently; it writes the adapter (a LoRA adapter file)."""
    assert main(["finetune", "--method", "qlora", "--steps", "3", "--batch-size", "4", "--save", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    line = [x for x in out.splitlines() if x.startswith("held-out task exact match")][0]
    after = float(line.split("(token accuracy ")[1].rstrip(")").split(" -> ")[1])
    size = sum(f.stat().st_size for f in tmp_path.iterdir())
    assert f"adapter: {size:,d} bytes on disk ({tmp_path})" in out
    cfg = json.loads((tmp_path / "adapter_config.json").read_text())
    assert (cfg["peft_type"], cfg["r"], cfg["lora_alpha"]) == ("LORA", 8, 16)
    config = LoraConfig(r=8, lora_alpha=16, target_modules="all-linear")
    model = load_adapter(prepare_qlora(minilora.load_base_model(), config), tmp_path)  # the same 4-bit base
    assert accuracy(model, *heldout_eval_batch())["token_acc"] == pytest.approx(after, abs=5e-4)
    load_adapter(minilora.load_base_model(), tmp_path)  # and onto the float base, as PEFT would
