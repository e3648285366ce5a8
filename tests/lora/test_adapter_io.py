"""Adapter files: PEFT's names and keys, a bit-exact round trip, and mismatches refused before any change."""

import json
import warnings

import numpy as np
import pytest

from minilora.nn import MLP
from minilora.peft import (
    LoraConfig,
    adapter_files,
    adapter_nbytes,
    inject_lora,
    load_adapter,
    lora_modules,
    read_adapter,
    save_adapter,
)

pytest.importorskip("safetensors")
from safetensors.numpy import load_file, save_file  # noqa: E402


def trained_mlp(config=None, seed=0):
    model = inject_lora(
        MLP([6, 16, 16, 4], seed=0),
        config or LoraConfig(r=2, lora_alpha=4, target_modules=("fc0", "fc2")),
        seed=seed,
    )
    rng = np.random.default_rng(seed)
    for name in model.trainable_names():  # pretend it was trained: B ≠ 0
        model.params[name][...] = rng.standard_normal(model.params[name].shape)
    return model


def test_files_follow_peft(tmp_path):
    model = trained_mlp()
    save_adapter(model, tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["adapter_config.json", "adapter_model.safetensors"]
    tensors = load_file(str(tmp_path / "adapter_model.safetensors"))
    assert {k: v.shape for k, v in tensors.items()} == {
        "base_model.model.fc0.lora_A.weight": (2, 6),
        "base_model.model.fc0.lora_B.weight": (16, 2),
        "base_model.model.fc2.lora_A.weight": (2, 16),
        "base_model.model.fc2.lora_B.weight": (4, 2),
    }
    cfg = json.loads((tmp_path / "adapter_config.json").read_text())
    assert cfg["peft_type"] == "LORA" and cfg["bias"] == "none" and cfg["use_rslora"] is False
    assert (cfg["r"], cfg["lora_alpha"], cfg["target_modules"], cfg["lora_dropout"]) == (
        2,
        4,
        ["fc0", "fc2"],
        0.0,
    )


def test_round_trip_is_bit_exact_into_a_fresh_model(tmp_path):
    model = trained_mlp(LoraConfig(r=3, lora_alpha=5, target_modules="all-linear", use_rslora=True))
    save_adapter(model, tmp_path)
    fresh = load_adapter(MLP([6, 16, 16, 4], seed=0), tmp_path)
    assert fresh.lora_config == LoraConfig(
        r=3, lora_alpha=5, target_modules=("fc0", "fc1", "fc2"), use_rslora=True
    )
    assert list(fresh.params) == list(model.params)
    for k, v in model.params.items():
        assert np.array_equal(fresh.params[k], v) and fresh.params[k].dtype == v.dtype, k
    assert fresh.trainable_names() == model.trainable_names()
    x = np.random.default_rng(0).standard_normal((3, 6)).astype(np.float32)
    assert np.array_equal(fresh.forward(x), model.forward(x))


def test_round_trip_into_a_model_with_lora(tmp_path):
    model = trained_mlp(seed=1)
    save_adapter(model, tmp_path)
    other = trained_mlp(seed=2)
    load_adapter(other, tmp_path)
    for k, v in model.params.items():
        assert np.array_equal(other.params[k], v), k


def test_regex_config_round_trips(tmp_path):
    model = trained_mlp(LoraConfig(r=2, target_modules=r"fc[12]"))
    save_adapter(model, tmp_path)
    assert json.loads((tmp_path / "adapter_config.json").read_text())["target_modules"] == r"fc[12]"
    fresh = load_adapter(MLP([6, 16, 16, 4], seed=0), tmp_path)
    assert list(lora_modules(fresh)) == ["fc1", "fc2"]


def _assert_unchanged(model, before):
    assert list(model.params) == list(before)
    for k, v in before.items():
        assert np.array_equal(model.params[k], v), k


@pytest.mark.parametrize("with_lora", [False, True])
def test_mismatched_shapes_refused_and_nothing_loaded(tmp_path, with_lora):
    save_adapter(trained_mlp(), tmp_path)
    # same names, other widths: fc0 is (16, 5) instead of (16, 6)
    target = MLP([5, 16, 16, 4], seed=0)
    if with_lora:
        target = trained_mlp(seed=3)
        tensors = load_file(str(tmp_path / "adapter_model.safetensors"))
        tensors["base_model.model.fc2.lora_B.weight"] = np.zeros((5, 2), np.float32)
        save_file(tensors, str(tmp_path / "adapter_model.safetensors"))
    before = target.state_dict()
    with pytest.raises(ValueError, match="has shape"):
        load_adapter(target, tmp_path)
    _assert_unchanged(target, before)


def test_mismatched_targets_refused(tmp_path):
    save_adapter(trained_mlp(), tmp_path)
    target = trained_mlp(LoraConfig(r=2, lora_alpha=4, target_modules=("fc1",)), seed=4)
    before = target.state_dict()
    with pytest.raises(ValueError, match=r"missing \['fc1.lora_A.weight'.*unexpected \['fc0.lora_A.weight'"):
        load_adapter(target, tmp_path)
    _assert_unchanged(target, before)


def test_mismatched_rank_refused(tmp_path):
    save_adapter(trained_mlp(), tmp_path)
    target = trained_mlp(LoraConfig(r=3, lora_alpha=4, target_modules=("fc0", "fc2")))
    before = target.state_dict()
    with pytest.raises(ValueError, match="adapter has r=2"):
        load_adapter(target, tmp_path)
    _assert_unchanged(target, before)


def test_extra_tensor_refused(tmp_path):
    save_adapter(trained_mlp(), tmp_path)
    tensors = load_file(str(tmp_path / "adapter_model.safetensors"))
    tensors["base_model.model.fc1.lora_A.weight"] = np.zeros((2, 16), np.float32)
    save_file(tensors, str(tmp_path / "adapter_model.safetensors"))
    target = MLP([6, 16, 16, 4], seed=0)
    before = target.state_dict()
    with pytest.raises(ValueError, match=r"unexpected \['fc1.lora_A.weight'"):
        load_adapter(target, tmp_path)
    _assert_unchanged(target, before)
    assert not lora_modules(target)


def test_non_float_adapter_refused(tmp_path):
    save_adapter(trained_mlp(), tmp_path)
    tensors = load_file(str(tmp_path / "adapter_model.safetensors"))
    tensors["base_model.model.fc0.lora_A.weight"] = tensors["base_model.model.fc0.lora_A.weight"].astype(np.int32)
    save_file(tensors, str(tmp_path / "adapter_model.safetensors"))
    target = MLP([6, 16, 16, 4], seed=0)
    with pytest.raises(ValueError, match="has dtype int32; it must be a float array"):
        load_adapter(target, tmp_path)
    assert not lora_modules(target)


@pytest.mark.parametrize("dtype", ["float16", "float64"])
def test_float_adapter_cast_to_the_model_dtype_with_a_warning(tmp_path, dtype):
    """PEFT keeps float32 adapters on a float16 base (autocast_adapter_dtype); loading one into a float16
    minilora model was refused on dtype. It is cast, and the warning says so."""
    model = trained_mlp()
    save_adapter(model, tmp_path)
    target = MLP([6, 16, 16, 4], seed=0).to(dtype)
    with pytest.warns(UserWarning, match=f"4 tensors cast to the model's dtype \\(float32->{dtype}\\)"):
        load_adapter(target, tmp_path)
    for name, layer in lora_modules(target).items():
        assert layer.A.dtype == np.dtype(dtype)
        assert np.array_equal(layer.A, model.get_submodule(name).A.astype(dtype))
        assert np.array_equal(layer.B, model.get_submodule(name).B.astype(dtype))


def test_cast_that_overflows_is_refused(tmp_path):
    model = trained_mlp()
    model.fc0.B[0, 0] = 1e6  # beyond float16's 65504
    save_adapter(model, tmp_path)
    target = MLP([6, 16, 16, 4], seed=0).to("float16")
    with pytest.raises(ValueError, match="overflows the model's dtype float16"):
        load_adapter(target, tmp_path)
    assert not lora_modules(target)


# ------------------------------------------------------------------ PiSSA / OLoRA (residual base weights)
def trained_residual_mlp(init, use_rslora=False, r=2):
    model = inject_lora(MLP([6, 16, 16, 4], seed=0),
                        LoraConfig(r=r, lora_alpha=4, target_modules=("fc0", "fc2"), init_lora_weights=init,
                                   use_rslora=use_rslora), seed=0)
    rng = np.random.default_rng(0)
    for name in model.trainable_names():  # as if trained: A, B move away from the initial A0, B0
        model.params[name][...] += rng.standard_normal(model.params[name].shape).astype(np.float32) * 0.3
    return model


def assert_round_trip_close(y, desired):
    """Converted: W + s·B'A' replaces fl(W − s·B0A0) + s·BA, so each of the 3 layers rounds differently, by
    at most (k + 4r) float32 roundings (u = 2^-24) of terms of the output's scale, k ≤ 16 inputs: |Δy| ≤
    3 · (16 + 8) · u · scale ≈ 4.3e-6 · scale; we allow 1e-5 · scale."""
    np.testing.assert_allclose(y, desired, rtol=0, atol=1e-5 * np.abs(desired).max())


@pytest.mark.parametrize("convert", [True, False], ids=["converted", "unconverted"])
@pytest.mark.parametrize("init", ["pissa", "olora"])
def test_residual_init_survives_save_and_load(tmp_path, init, convert):
    """A PiSSA model saved and loaded onto a fresh base gave outputs off by ~0.6 on outputs of scale 0.45
    (A, B applied to W instead of the residual W − s·B0A0), with no error."""
    model = trained_residual_mlp(init)
    x = np.random.default_rng(1).standard_normal((5, 6)).astype(np.float32)
    y = model.forward(x)
    save_adapter(model, tmp_path, convert_pissa_to_lora=convert)
    fresh = load_adapter(MLP([6, 16, 16, 4], seed=0), tmp_path)
    assert_round_trip_close(fresh.forward(x), y)
    assert not np.allclose(fresh.forward(x), MLP([6, 16, 16, 4], seed=0).forward(x), atol=1e-2)  # the adapter acts


@pytest.mark.parametrize("use_rslora", [False, True])
def test_conversion_follows_peft(tmp_path, use_rslora):
    """PEFT's path_initial_model_for_weight_conversion: A' = [A; A0], B' = [B, -B0], r' = 2r, alpha' = 2 alpha
    (rsLoRA: sqrt(2) alpha, the same scaling), init_lora_weights true."""
    model = trained_residual_mlp("pissa", use_rslora=use_rslora)
    save_adapter(model, tmp_path)
    cfg = json.loads((tmp_path / "adapter_config.json").read_text())
    assert (cfg["r"], cfg["init_lora_weights"]) == (4, True)
    assert cfg["lora_alpha"] == (4 * np.sqrt(2) if use_rslora else 8)
    assert LoraConfig(r=cfg["r"], lora_alpha=cfg["lora_alpha"], use_rslora=use_rslora).scaling == pytest.approx(
        model.fc0.scaling, rel=1e-15)
    tensors = load_file(str(tmp_path / "adapter_model.safetensors"))
    A0, B0 = model.fc0.residual_init
    assert np.array_equal(tensors["base_model.model.fc0.lora_A.weight"], np.concatenate([model.fc0.A, A0]))
    assert np.array_equal(tensors["base_model.model.fc0.lora_B.weight"], np.concatenate([model.fc0.B, -B0], axis=1))
    save_adapter(model, tmp_path / "raw", convert_pissa_to_lora=False)
    raw = json.loads((tmp_path / "raw" / "adapter_config.json").read_text())
    assert (raw["r"], raw["lora_alpha"], raw["init_lora_weights"]) == (2, 4, "pissa")


def test_conversion_needing_rank_above_min_dim_refused(tmp_path):
    model = trained_residual_mlp("pissa", r=4)  # fc2 is (4, 16): 2r = 8 > 4
    with pytest.raises(ValueError, match="convert_pissa_to_lora=False"):
        save_adapter(model, tmp_path)
    assert not tmp_path.joinpath("adapter_config.json").exists()
    save_adapter(model, tmp_path, convert_pissa_to_lora=False)
    x = np.ones((2, 6), np.float32)
    assert_round_trip_close(load_adapter(MLP([6, 16, 16, 4], seed=0), tmp_path).forward(x), model.forward(x))


def test_unconverted_pissa_file_refused_by_plain_lora_layers(tmp_path):
    save_adapter(trained_residual_mlp("pissa"), tmp_path, convert_pissa_to_lora=False)
    target = trained_mlp()  # plain LoRA on the original weights
    before = target.state_dict()
    with pytest.raises(ValueError, match="only loads into a layer of the same kind"):
        load_adapter(target, tmp_path)
    _assert_unchanged(target, before)


# ------------------------------------------------------------------ init_lora_weights in the file
@pytest.mark.parametrize("init, written", [("random", False), ("zero_A", True), ("zeros", True),
                                           (False, False), ("gaussian", "gaussian")])
def test_init_written_as_peft_accepts_and_read_back(tmp_path, init, written):
    """PEFT 0.21.2 refused "random" ("Unknown initialization"): the file holds a value PEFT accepts and the
    teaching name sits in the safetensors metadata, which PEFT ignores."""
    model = trained_mlp(LoraConfig(r=2, lora_alpha=4, target_modules=("fc0", "fc2"), init_lora_weights=init))
    save_adapter(model, tmp_path)
    assert json.loads((tmp_path / "adapter_config.json").read_text())["init_lora_weights"] == written
    from safetensors import safe_open

    with safe_open(str(tmp_path / "adapter_model.safetensors"), framework="np") as f:
        teaching = (f.metadata() or {}).get("minilora.init_lora_weights")
    assert teaching == (init if isinstance(init, str) and init in ("random", "zero_A", "zeros") else None)
    config, _ = read_adapter(tmp_path)
    assert config.init_lora_weights == init and type(config.init_lora_weights) is type(init)


@pytest.mark.parametrize("value, warns", [
    (False, None), ("eva", None), ("orthogonal", None), ("mica", None), ("gaussian", None),
    ("loftq", "changes the base weights"), ("corda", "changes the base weights"),
    ("lora_ga", "changes the base weights"), ("some_future_init", "unknown to minilora"),
    ("pissa_niter_16", "exact SVD"),
])
def test_peft_creation_time_inits_do_not_block_loading(tmp_path, value, warns):
    """init_lora_weights is used when PEFT creates the layers; a file carrying PEFT's other values was refused
    ("must be one of ...")."""
    model = trained_mlp()
    save_adapter(model, tmp_path)
    path = tmp_path / "adapter_config.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), "init_lora_weights": value}))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fresh = load_adapter(MLP([6, 16, 16, 4], seed=0), tmp_path)
    messages = [str(w.message) for w in caught]
    assert (messages == []) if warns is None else (len(messages) == 1 and warns in messages[0])
    for name, layer in lora_modules(fresh).items():
        assert np.array_equal(layer.A, model.get_submodule(name).A)


def test_bad_init_value_in_file(tmp_path):
    save_adapter(trained_mlp(), tmp_path)
    path = tmp_path / "adapter_config.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), "init_lora_weights": 3}))
    with pytest.raises(ValueError, match="init_lora_weights must be a bool or a string, got 3"):
        read_adapter(tmp_path)


# ------------------------------------------------------------------ sizes, modules_to_save
def test_adapter_files_are_the_bytes_save_writes(tmp_path):
    model = trained_mlp()
    files = adapter_files(model)
    save_adapter(model, tmp_path)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == files
    assert adapter_nbytes(model) == sum(p.stat().st_size for p in tmp_path.iterdir())


def test_modules_to_save_round_trip(tmp_path):
    config = LoraConfig(r=2, lora_alpha=4, target_modules=("fc0",), modules_to_save=("fc2",))
    model = trained_mlp(config)
    assert "fc2.weight" in model.trainable_names()
    save_adapter(model, tmp_path)
    tensors = load_file(str(tmp_path / "adapter_model.safetensors"))
    assert sorted(tensors) == ["base_model.model.fc0.lora_A.weight", "base_model.model.fc0.lora_B.weight",
                               "base_model.model.fc2.bias", "base_model.model.fc2.weight"]  # PEFT's layout
    assert json.loads((tmp_path / "adapter_config.json").read_text())["modules_to_save"] == ["fc2"]
    fresh = load_adapter(MLP([6, 16, 16, 4], seed=0), tmp_path)
    assert fresh.lora_config == config
    for k, v in model.params.items():
        assert np.array_equal(fresh.params[k], v), k
    assert fresh.trainable_names() == model.trainable_names()
    other = trained_mlp(config, seed=5)
    load_adapter(other, tmp_path)  # into a model that already has the same LoRA and modules_to_save
    for k, v in model.params.items():
        assert np.array_equal(other.params[k], v), k


@pytest.mark.parametrize(
    "edit, match",
    [
        ({"peft_type": "PREFIX_TUNING"}, "peft_type must be 'LORA'"),
        ({"use_dora": True}, "use_dora"),
        ({"r": 0}, "r must be"),
        ({"rank_pattern": {"fc0": 4}}, "rank_pattern"),
    ],
)
def test_bad_config_files(tmp_path, edit, match):
    save_adapter(trained_mlp(), tmp_path)
    path = tmp_path / "adapter_config.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), **edit}))
    with pytest.raises(ValueError, match=match):
        read_adapter(tmp_path)


def test_missing_files_and_bad_models(tmp_path):
    with pytest.raises(ValueError, match="has no adapter_config.json"):
        load_adapter(MLP([6, 4]), tmp_path)
    with pytest.raises(ValueError, match="no LoRA layers"):
        save_adapter(MLP([6, 4]), tmp_path)
    model = trained_mlp()
    model.fc0.merge()
    with pytest.raises(ValueError, match="merged"):
        save_adapter(model, tmp_path)
