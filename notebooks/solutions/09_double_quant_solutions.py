# %% [markdown]
# # 09 · Double quantization: worked solutions
#
# The three exercises of `09_double_quant`, computed and checked with `assert`s (CI runs this notebook).

# %%
import numpy as np

from minilora.peft.memory import ModelShape, quantized_nbytes
from minilora.quant import dequantize_blockwise, quantize_4bit, quantize_blockwise
from minilora.quant.double_quant import decompress_absmax, exact_mean_f32

w = (np.random.default_rng(0).standard_normal((2048, 2048)) * 0.02).astype(np.float32)
_, st_dq = quantize_4bit(w, blocksize=64, quant_type="nf4", compress_statistics=True)
_, st = quantize_4bit(w, blocksize=64, quant_type="nf4")
absmax = st.absmax


def rel_error(rec):
    e = np.abs(rec - absmax) / absmax
    return float(e.mean()), float(e.max())


# %% [markdown]
# ## 1. Second-level blocks of 64 instead of 256
#
# The per-parameter overhead becomes `8/64 + 32/(64·64)`: more float32 second-level scales, each serving
# fewer constants, so each block of constants gets a tighter scale.

# %%
offset = exact_mean_f32(absmax)
results = {}
for bs2 in (256, 64):
    q, state2 = quantize_blockwise(absmax - offset, blocksize=bs2)
    rec = dequantize_blockwise(q, state2) + offset
    bits = 4 + (8 * q.size + 32 * state2.absmax.size) / w.size
    results[bs2] = (bits, *rel_error(rec))
    print(f"second-level blocksize {bs2:3d}: {bits:.6f} bits/param, absmax error mean {results[bs2][1]:.2e}, "
          f"max {results[bs2][2]:.2e}")
assert np.array_equal(dequantize_blockwise(*quantize_blockwise(absmax - offset, blocksize=256)) + offset,
                      decompress_absmax(st_dq.absmax, st_dq.offset, st_dq.state2))  # 256 is what quantize_4bit does
assert results[64][0] == 4 + 8 / 64 + 32 / (64 * 64) and results[256][0] == 4 + 8 / 64 + 32 / (64 * 256)
assert results[64][1] < results[256][1]
print(f"blocks of 64 cost {results[64][0] - results[256][0]:.4f} bit/param more and cut the mean absmax error by "
      f"{1 - results[64][1] / results[256][1]:.0%}")

# %% [markdown]
# ## 2. Without the offset
#
# Every absmax is positive, so quantizing absmax itself uses only the positive half of the symmetric map, and
# each second-level block is scaled by its largest absmax rather than by the largest *deviation from the
# mean*, which is smaller (the ratio is printed below). The step in absolute terms grows by that factor, and
# only half the codes are available.

# %%
q, state2 = quantize_blockwise(absmax, blocksize=256)
rec_no_offset = dequantize_blockwise(q, state2)
mean_no, max_no = rel_error(rec_no_offset)
print(f"no offset: absmax error mean {mean_no:.2e}, max {max_no:.2e} (with offset: {results[256][1]:.2e}, "
      f"{results[256][2]:.2e})")
print(f"codes used: {np.unique(q).size} of 256, all in the positive half: {bool((q >= 128).all())}")
spread = float(np.abs(absmax - offset).max() / absmax.max())
print(f"largest |absmax − offset| is {spread:.2f} of the largest absmax: the offset shrinks the second-level scale")
assert mean_no > results[256][1] and (q >= 128).all()

# %% [markdown]
# ## 3. A 7B model's linear layers in NF4 + DQ
#
# LLaMA-7B's block linears (`minilora.peft.memory.ModelShape.llama("7B")`): per layer four 4096 × 4096
# attention projections and three 11008 × 4096 feed-forward matrices. `QuantState.nbytes` for one matrix of
# each shape (quantized for real here), times the number of such matrices:

# %%
shape = ModelShape.llama("7B")
total = 0
for (out_f, in_f), count in {(4096, 4096): 4, (11008, 4096): 3}.items():
    x = (np.random.default_rng(1).standard_normal((out_f, in_f)) * 0.02).astype(np.float32)
    _, state = quantize_4bit(x, blocksize=64, quant_type="nf4", compress_statistics=True)
    assert state.nbytes == quantized_nbytes(out_f * in_f)  # the formula of peft.memory agrees with the arrays
    total += shape.n_layer * count * state.nbytes
    print(f"{out_f} × {in_f}: {state.nbytes:,d} bytes ({state.bits_per_param_total:.4f} bits/param incl. constants)")
assert shape.linear_params == shape.n_layer * (4 * 4096 * 4096 + 3 * 11008 * 4096)
print(f"{shape.n_layer} layers: {shape.linear_params:,d} weights in {total:,d} bytes = {total / 2**30:.2f} GiB "
      f"({total / 1e9:.2f} GB); in 16 bits they would take {2 * shape.linear_params / 1e9:.2f} GB")
