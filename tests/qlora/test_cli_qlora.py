"""``python -m minilora finetune --method qlora`` prints the memory table."""

from minilora.__main__ import main


def test_finetune_qlora_prints_memory_table(capsys):
    assert main(["finetune", "--method", "qlora", "--steps", "2", "--batch-size", "4"]) == 0
    out = capsys.readouterr().out
    assert "method: qlora" in out and "targets=all-linear" in out
    header = [line for line in out.splitlines() if line.startswith("method ")]
    assert len(header) == 2 and header[0].split()[1:4] == ["weights", "gradients", "optimizer"]
    rows = {line.split()[0] for line in out.splitlines()}
    assert {"full", "lora", "qlora", "full_16bit"} <= rows
    assert "bits per parameter measured" in out
