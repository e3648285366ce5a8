# %% [markdown]
# # 10 · QLoRA: worked solutions
#
# The three exercises of `10_qlora`, computed and checked with `assert`s (CI runs this notebook).

# %%
import copy

import numpy as np

import minilora
from minilora import lora_experiments as E
from minilora import qlora_experiments as Q
from minilora.formats import FP16
from minilora.peft import QLoRALinear

base = minilora.load_base_model()

# %% [markdown]
# ## 1. The LoRA − QLoRA gap over three seeds
#
# The notebook's comparison (all-linear, r = 8, the recipe of notebook 02) for seeds 0, 1, 2, LoRA and QLoRA
# only. The seed changes the adapter's initialization and the data order, the same for both methods.

# %%
seeds = (0, 1, 2)
em = {"lora": [], "qlora": []}
for seed in seeds:
    runs = Q.compare_methods(base, Q.QLORA_CONFIG, eval_every=0, seed=seed, methods=("lora", "qlora"))
    for method, (_, _, report) in runs.items():
        em[method].append(report["exact_match_after"])
gaps = np.array(em["lora"]) - np.array(em["qlora"])
print("exact match, LoRA :", np.round(em["lora"], 3).tolist())
print("exact match, QLoRA:", np.round(em["qlora"], 3).tolist())
c = E.compare_losses(em["qlora"], em["lora"])
print(f"LoRA − QLoRA gap per seed {np.round(gaps, 3).tolist()}: mean {gaps.mean():+.3f} ± {gaps.std(ddof=1):.3f} (sd)")
print(f"QLoRA's exact match against LoRA's: {c['diff']:+.3f} ± {c['se']:.3f} → {c['verdict']}")
assert c["verdict"] in ("lower", "higher", "within seed spread") and len(gaps) == len(seeds)

# %% [markdown]
# The verdict is computed (`compare_losses` on the exact matches: "lower" would mean QLoRA is behind beyond
# two standard errors). Three seeds of 150 steps on a two-block model are a small sample: the spread printed
# is the honest error bar on the notebook's one-seed gap.
#
# ## 2. Other storage and compute choices for one layer
#
# The same layer as in the notebook, quantized four ways. Bits per parameter come from the stored arrays;
# the weight error compares the compute-format weight with the original.

# %%
layer = base.get_submodule("blocks.0.mlp.up_proj")
W = layer.weight.astype(np.float64)
variants = {"NF4 + DQ, BF16 (QLoRA)": {}, "NF4 without DQ": {"compress_statistics": False},
            "FP4 + DQ": {"quant_type": "fp4"}, "NF4 + DQ, FP16 compute": {"compute_format": FP16}}
results = {}
for name, kw in variants.items():
    q = QLoRALinear(copy.deepcopy(layer), r=8, lora_alpha=16, **kw)
    Wc = q.qweight.compute_weight().astype(np.float64)
    Wd = q.qweight.dequantize().astype(np.float64)  # before the compute-format rounding
    results[name] = (q.qweight.bits_per_param, float(np.linalg.norm(Wc - W) / np.linalg.norm(W)),
                     float(np.linalg.norm(Wc - Wd) / np.linalg.norm(W)))
    print(f"{name:24s}: {results[name][0]:.4f} bits/param, relative weight error {results[name][1]:.5f} "
          f"(of which the compute-format rounding alone: {results[name][2]:.5f})")
qlora = results["NF4 + DQ, BF16 (QLoRA)"]
assert results["NF4 without DQ"][0] == 4.5 and qlora[0] == 4 + 8 / 64 + 32 / (64 * 256)
assert results["NF4 without DQ"][1] < qlora[1]  # exact absmax: a little less error, 0.373 bit more
assert results["FP4 + DQ"][1] > qlora[1]  # FP4's levels fit normal weights worse (notebook 08)
fp16 = results["NF4 + DQ, FP16 compute"]
assert fp16[2] < qlora[2] / 4  # FP16 keeps 3 more mantissa bits than BF16: about 8x less rounding
print(f"DQ trades a little accuracy for 0.373 bit/param; FP4 costs accuracy at the same size; FP16 compute rounds "
      f"{qlora[2] / fp16[2]:.0f}x less than BF16, but that rounding was already small next to the 4-bit error")

# %% [markdown]
# ## 3. A spike larger than the whole optimizer state
#
# With 12-digit sequences the activations of one batch need more room than the budget has even after every
# optimizer page is evicted. The simulated device raises `MemoryError` and names the numbers:

# %%
try:
    Q.paging_demo(base, Q.QLORA_CONFIG, spike_digits=12)
    raised = None
except MemoryError as err:
    raised = str(err)
print(raised)
assert raised is not None and "out of device memory" in raised

# %% [markdown]
# Paging can only move what is pageable: the optimizer state lives in managed (unified) memory, the
# activations do not. On a real GPU the same happens: PyTorch allocates activations with ordinary device
# memory, so once the optimizer's managed pages are all on the host and the activations still do not fit,
# the allocation fails with a CUDA out-of-memory error. The remedies are the usual ones: a smaller batch or
# sequence, or gradient checkpointing (notebook section 3's `qlora` row), which shrinks the activations.
