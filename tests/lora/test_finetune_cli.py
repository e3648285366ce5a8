"""``python -m minilora finetune`` on the shipped base GPT (few steps: the CLI wiring, not the accuracy)."""

import json

import numpy as np
import pytest

import minilora
from minilora.__main__ import main
from minilora.data import accuracy, heldout_eval_batch
from minilora.peft import load_adapter

pytest.importorskip("safetensors")


def _lines(out: str) -> dict[str, str]:
    return {line.split(":", 1)[0]: line for line in out.splitlines() if ":" in line}


def test_finetune_lora_all_linear(tmp_path, capsys):
    argv = ["finetune", "--method", "lora", "--r", "2", "--alpha", "4", "--targets", "all-linear",
            "--steps", "3", "--save", str(tmp_path)]
    assert main(argv) == 0
    captured = capsys.readouterr()
    out = _lines(captured.out)
    cfg = minilora.load_base_model().config
    d, n = cfg.n_embd, cfg.n_layer
    lora_params = n * (4 * 2 * (d + d) + 2 * 2 * (d + 4 * d))  # q, k, v, o (d→d) and up/down (d↔4d), r = 2
    base_params = minilora.load_base_model().num_params()
    assert out["trainable params"].startswith(
        f"trainable params: {lora_params:,d} || all params: {base_params + lora_params:,d}")
    size = sum(f.stat().st_size for f in tmp_path.iterdir())
    assert f"adapter: {size:,d} bytes on disk" in out["adapter"]
    assert "held-out task exact match: 0.000 before ->" in out["held-out task exact match"]
    assert "finetune (lora)" in captured.err  # the progress bar
    config = json.loads((tmp_path / "adapter_config.json").read_text())
    assert config["r"] == 2 and config["lora_alpha"] == 4
    assert sorted(config["target_modules"]) == ["down_proj", "k_proj", "o_proj", "q_proj", "up_proj", "v_proj"]


def test_finetune_lora_learns_and_adapter_reproduces_it(tmp_path, capsys):
    """20 steps lift the held-out token accuracy; the saved adapter on a fresh base gives the printed value."""
    assert main(["finetune", "--steps", "20", "--save", str(tmp_path)]) == 0
    line = _lines(capsys.readouterr().out)["held-out task exact match"]
    before, after = (float(x) for x in line.split("(token accuracy ")[1].rstrip(")").split(" -> "))
    assert after > before + 0.2
    model = load_adapter(minilora.load_base_model(), tmp_path)
    assert accuracy(model, *heldout_eval_batch())["token_acc"] == pytest.approx(after, abs=5e-4)
    config = json.loads((tmp_path / "adapter_config.json").read_text())
    assert (config["r"], config["lora_alpha"], config["target_modules"]) == (8, 16, ["q_proj", "v_proj"])


def test_finetune_full(capsys):
    assert main(["finetune", "--method", "full", "--steps", "2"]) == 0
    out = capsys.readouterr().out
    nbytes = sum(p.nbytes for p in minilora.load_base_model().params.values())
    assert "trainable%: 100.0000" in out and f"fine-tuned copy: {nbytes:,d} bytes" in out


def test_finetune_does_not_touch_the_shipped_file(capsys):
    before = {k: v.copy() for k, v in minilora.load_base_model().params.items()}
    assert main(["finetune", "--method", "full", "--steps", "1"]) == 0
    after = minilora.load_base_model().params
    assert all(np.array_equal(before[k], after[k]) for k in before)


def test_finetune_bad_arguments(capsys):
    assert main(["finetune", "--r", "0", "--steps", "1"]) == 2
    assert "r must be" in capsys.readouterr().err
    assert main(["finetune", "--targets", "nope", "--steps", "1"]) == 2
    assert "matches no Linear" in capsys.readouterr().err
    assert main(["finetune", "--r", "65", "--steps", "1"]) == 2
    assert "r=65 exceeds min(in, out) = 64" in capsys.readouterr().err


def test_finetune_lora_without_save_leaves_no_directory(tmp_path, monkeypatch, capsys):
    """The adapter size was measured by saving into tempfile.mkdtemp(), left behind on every run."""
    import tempfile

    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    assert main(["finetune", "--steps", "1"]) == 0
    out = capsys.readouterr().out
    assert list(scratch.iterdir()) == []
    assert "adapter: " in out and "bytes (not written; --save DIR writes it)" in out
    # the size printed is what --save writes
    assert main(["finetune", "--steps", "1", "--save", str(tmp_path / "a")]) == 0
    saved = _lines(capsys.readouterr().out)["adapter"]
    size = sum(f.stat().st_size for f in (tmp_path / "a").iterdir())
    assert f"adapter: {size:,d} bytes" in saved and f"adapter: {size:,d} bytes" in out


def test_finetune_full_save_writes_the_model(tmp_path, capsys):
    """--method full --save DIR was ignored silently; it writes DIR/model.npz (GPT.save)."""
    assert main(["finetune", "--method", "full", "--steps", "2", "--save", str(tmp_path)]) == 0
    line = _lines(capsys.readouterr().out)["held-out task exact match"]
    after = float(line.split("(token accuracy ")[1].rstrip(")").split(" -> ")[1])
    model = minilora.load_base_model(tmp_path / "model.npz")
    assert accuracy(model, *heldout_eval_batch())["token_acc"] == pytest.approx(after, abs=5e-4)
    shipped = minilora.load_base_model()
    assert any(not np.array_equal(model.params[k], v) for k, v in shipped.params.items())  # it trained


def test_finetune_save_onto_a_file_is_refused(tmp_path, capsys):
    target = tmp_path / "file"
    target.write_text("")
    assert main(["finetune", "--steps", "1", "--save", str(target)]) == 2
    assert "--save must be a directory" in capsys.readouterr().err


def test_finetune_init_false(tmp_path, capsys):
    assert main(["finetune", "--steps", "1", "--init", "false", "--save", str(tmp_path)]) == 0
    assert json.loads((tmp_path / "adapter_config.json").read_text())["init_lora_weights"] is False
