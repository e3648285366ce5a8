# %% [markdown]
# # 13 · Adapters: worked solutions
#
# The three exercises of `13_adapters`, computed and checked with `assert`s (CI runs this notebook).

# %%
import numpy as np

import minilora
from minilora import data
from minilora.experiments import methods as M
from minilora.experiments import recipe as R
from minilora.nn.modules import Block
from minilora.peft import DoubleSeqBnConfig, SeqBnConfig, adapters

# %% [markdown]
# ## 1. The reduction factor
#
# m = 64 // reduction_factor: 16, 4 and 1 hidden units per adapter.

# %%
sweep = {rf: M.seed_runs(DoubleSeqBnConfig(reduction_factor=rf)) for rf in (4, 16, 64)}
for rf, r in sweep.items():
    m = 64 // rf
    assert r.trainable == 2 * 2 * (2 * m * 64 + 64 + m)  # two adapters in each of two blocks
    print(f"reduction {rf:2d} (m = {m:2d}, {r.trainable:5,d} trained): exact match {r.summary()}, token accuracy "
          f"{r.mean('token_acc_after'):.3f}")
print(f"the exact match at reduction 4 is {M.compared(sweep[4], sweep[16])} that at 16, which is "
      f"{M.compared(sweep[16], sweep[64])} that at 64")

# %% [markdown]
# ## 2. Houlsby and Pfeiffer at a matched budget

# %%
houlsby = M.seed_runs(DoubleSeqBnConfig(reduction_factor=16))
pfeiffer = M.seed_runs(SeqBnConfig(reduction_factor=8))
assert (houlsby.trainable, pfeiffer.trainable) == (2320, 2192)
print(f"Houlsby, two adapters per block, m = 4 ({houlsby.trainable:,d}): exact match {houlsby.summary()}")
print(f"Pfeiffer, one adapter per block, m = 8 ({pfeiffer.trainable:,d}): exact match {pfeiffer.summary()}")
print(f"at about the same budget Pfeiffer's exact match is {M.compared(pfeiffer, houlsby)} Houlsby's")

# %% [markdown]
# ## 3. Taking the adapters out again

# %%
base = minilora.load_base_model()
before = base.state_dict()
eval_idx, _ = data.heldout_eval_batch(64)
base_logits, _ = minilora.load_base_model().forward(eval_idx)
model, _, report = R.finetune(base, DoubleSeqBnConfig(), M.RECIPE.replace(steps=50))
assert all(np.array_equal(model.params[k], v) for k, v in before.items())  # no base weight moved
assert not np.array_equal(model.forward(eval_idx)[0], base_logits)  # the adapters changed the model
adapters.unload_adapters(model)
assert all(type(block) is Block for block in model.blocks) and model.num_params() == base.num_params()
assert np.array_equal(model.forward(eval_idx)[0], base_logits)
print(f"after {50} steps (held-out loss {report['loss_before']:.3f} → {report['loss_after']:.3f}) and unload: "
      "the base model's logits, bit for bit")
