"""``python -m minilora finetune --method prompt|ptuning|prefix|adapter``: counts, adapter bytes, accuracy, --save.

(LoRA, QLoRA and full fine-tuning have their own CLI tests in tests/lora and tests/qlora.)
"""

import pytest

import minilora
from minilora.__main__ import main
from minilora.data import accuracy, heldout_eval_batch
from minilora.experiments.recipe import method_config, prepare
from minilora.peft import count_parameters, load_adapter

pytest.importorskip("safetensors")

CASES = {
    "prompt": ["--num-virtual-tokens", "4", "--prompt-init", "text", "--prompt-init-text", "9876"],
    "ptuning": ["--num-virtual-tokens", "4", "--encoder-hidden-size", "16"],
    "prefix": ["--num-virtual-tokens", "4", "--prefix-projection", "--encoder-hidden-size", "8"],
    "adapter": ["--reduction-factor", "8", "--non-linearity", "relu"],
}
OPTIONS = {
    "prompt": dict(num_virtual_tokens=4, prompt_tuning_init="TEXT", prompt_tuning_init_text=(9, 8, 7, 6)),
    "ptuning": dict(num_virtual_tokens=4, encoder_hidden_size=16),
    "prefix": dict(num_virtual_tokens=4, prefix_projection=True, encoder_hidden_size=8),
    "adapter": dict(reduction_factor=8, non_linearity="relu"),
}


def _after(out: str) -> float:
    line = [x for x in out.splitlines() if x.startswith("held-out task exact match")][0]
    return float(line.split("(token accuracy ")[1].rstrip(")").split(" -> ")[1])


@pytest.mark.parametrize("method", list(CASES))
def test_finetune_method_prints_counts_bytes_accuracy_and_saves(method, tmp_path, capsys):
    argv = ["finetune", "--method", method, "--steps", "2", "--batch-size", "4", "--save", str(tmp_path),
            *CASES[method]]
    assert main(argv) == 0
    out = capsys.readouterr().out
    config, _ = method_config(method, **OPTIONS[method])
    trainable, total = count_parameters(prepare(minilora.load_base_model(), config))
    assert f"trainable params: {trainable:,d} || all params: {total:,d}" in out
    assert out.startswith(f"method: {method} ({config!r});")
    size = sum(f.stat().st_size for f in tmp_path.iterdir())
    assert f"adapter: {size:,d} bytes on disk ({tmp_path})" in out
    model = load_adapter(minilora.load_base_model(), tmp_path)  # the one load_adapter, by the file's method
    assert accuracy(model, *heldout_eval_batch())["token_acc"] == pytest.approx(_after(out), abs=5e-4)


def test_finetune_method_without_save_prints_what_save_would_write(capsys):
    assert main(["finetune", "--method", "prefix", "--steps", "1", "--batch-size", "4"]) == 0
    assert "bytes (not written; --save DIR writes it)" in capsys.readouterr().out


@pytest.mark.parametrize("argv, message", [
    (["--method", "prompt", "--num-virtual-tokens", "0"], "num_virtual_tokens must be an integer >= 1"),
    (["--method", "prompt", "--num-virtual-tokens", "16"], "p + T must be at most block_size=32"),
    (["--method", "adapter", "--reduction-factor", "100"], "leaves no hidden unit"),
    (["--method", "ptuning", "--encoder", "gru"], None),  # argparse refuses the choice
    (["--method", "prompt", "--r", "4"], "--r do not apply to --method prompt"),
    (["--method", "lora", "--num-virtual-tokens", "4"], "--num-virtual-tokens do not apply to --method lora"),
    (["--method", "adapter", "--prefix-projection"], "--prefix-projection do not apply to --method adapter"),
    (["--method", "lora", "--quant-type", "fp4"], "--quant-type do not apply to --method lora"),
    (["--method", "prompt", "--prompt-init", "text"], "prompt_tuning_init='TEXT' needs"),
])
def test_bad_method_options_are_refused_by_name(argv, message, capsys):
    if message is None:
        with pytest.raises(SystemExit):
            main(["finetune", "--steps", "1", *argv])
        assert "invalid choice: 'gru'" in capsys.readouterr().err
        return
    assert main(["finetune", "--steps", "1", "--batch-size", "2", *argv]) == 2
    assert message in capsys.readouterr().err


def test_qlora_options_reach_the_4bit_base(capsys):
    assert main(["finetune", "--method", "qlora", "--quant-type", "fp4", "--blocksize", "32", "--steps", "1",
                 "--batch-size", "2"]) == 0
    out = capsys.readouterr().out
    assert "linear layers in FP4 + double quantization (blocksize 32)" in out


def test_a_real_checkpoint_takes_only_the_methods_it_runs(tmp_path, capsys):
    """--base (a GPT-2 checkpoint and a text) runs lora, qlora and full; another method is refused, not mistaken
    for LoRA."""
    assert main(["finetune", "--base", str(tmp_path), "--text", str(tmp_path / "t.txt"), "--method", "prefix"]) == 2
    assert "--base fine-tunes with --method lora | qlora | full, got 'prefix'" in capsys.readouterr().err
