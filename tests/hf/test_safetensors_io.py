"""minilora's safetensors reader/writer against the reference ``safetensors`` package (in the test extra)."""

import struct

import numpy as np
import pytest

from minilora.hf.safetensors_io import LazyTensor, SafetensorsError, load_file, read_header, write_file

st_numpy = pytest.importorskip("safetensors.numpy")

DTYPES = (np.float64, np.float32, np.float16, np.int64, np.int32, np.int16, np.int8, np.uint8, np.uint16,
          np.uint32, np.uint64, np.bool_)


def arrays():
    rng = np.random.default_rng(0)
    out = {f"t.{np.dtype(dt).name}": (rng.standard_normal((3, 5)) * 50).astype(dt) for dt in DTYPES}
    out["empty"] = np.zeros((0, 4), np.float32)
    out["scalar"] = np.array(2.5, np.float32)
    return out


def test_reference_reads_what_minilora_writes(tmp_path):
    a = arrays()
    write_file(tmp_path / "m.safetensors", a, metadata={"format": "pt"})
    back = st_numpy.load_file(str(tmp_path / "m.safetensors"))
    assert sorted(back) == sorted(a)
    for k, v in a.items():
        assert back[k].dtype == v.dtype and back[k].shape == v.shape
        np.testing.assert_array_equal(back[k], v)
    from safetensors import safe_open

    with safe_open(str(tmp_path / "m.safetensors"), "np") as f:
        assert f.metadata() == {"format": "pt"}


def test_minilora_reads_what_the_reference_writes(tmp_path):
    a = arrays()
    st_numpy.save_file(a, str(tmp_path / "r.safetensors"), metadata={"k": "v"})
    tensors, metadata = read_header(tmp_path / "r.safetensors")
    assert metadata == {"k": "v"}
    back = load_file(tmp_path / "r.safetensors")
    for k, v in a.items():
        assert back[k].dtype == v.dtype
        np.testing.assert_array_equal(back[k], v)


def test_bf16_is_decoded_exactly(tmp_path):
    values = np.array([1.0, -2.5, 3.140625, 65280.0, -0.0, 2.0**-130], np.float32)  # all exact in BF16
    bits = (values.view(np.uint32) >> 16).astype("<u2")
    h = b'{"x":{"dtype":"BF16","shape":[6],"data_offsets":[0,12]}}'
    (tmp_path / "b.safetensors").write_bytes(struct.pack("<Q", len(h)) + h + bits.tobytes())
    out = load_file(tmp_path / "b.safetensors")["x"]
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out.view(np.uint32), values.view(np.uint32))


def test_lazy_tensors_are_made_one_at_a_time_and_checked(tmp_path):
    made = []

    def maker(i):
        def make():
            made.append(i)
            return np.full((2, 2), i, np.float32)
        return make

    write_file(tmp_path / "l.safetensors", {f"t{i}": LazyTensor((2, 2), np.dtype("float32"), maker(i))
                                            for i in range(3)})
    assert made == [0, 1, 2]
    assert load_file(tmp_path / "l.safetensors")["t2"][0, 0] == 2
    bad = {"t": LazyTensor((2, 2), np.dtype("float32"), lambda: np.zeros((2, 3), np.float32))}
    with pytest.raises(ValueError, match=r"declared \(2, 2\) float32 but made \(2, 3\)"):
        write_file(tmp_path / "bad.safetensors", bad)
    assert not (tmp_path / "bad.safetensors").exists() and not (tmp_path / "bad.safetensors.tmp").exists()


def test_header_is_padded_to_eight_bytes(tmp_path):
    write_file(tmp_path / "p.safetensors", {"abc": np.zeros(3, np.float32)})
    (n,) = struct.unpack("<Q", (tmp_path / "p.safetensors").read_bytes()[:8])
    assert n % 8 == 0


def test_small_and_empty_files(tmp_path):
    (tmp_path / "e.safetensors").write_bytes(b"\x01\x02")
    with pytest.raises(SafetensorsError, match="fewer than the 8-byte header length"):
        read_header(tmp_path / "e.safetensors")
    (tmp_path / "n.safetensors").write_bytes(struct.pack("<Q", 2) + b"[]")
    with pytest.raises(SafetensorsError, match=r"must start with '\{'"):
        read_header(tmp_path / "n.safetensors")
    (tmp_path / "big.safetensors").write_bytes(struct.pack("<Q", 10**9) + b"{}")
    with pytest.raises(SafetensorsError, match="exceeds the limit"):
        read_header(tmp_path / "big.safetensors")


def test_unwritable_dtype_is_refused(tmp_path):
    with pytest.raises(TypeError, match="complex128"):
        write_file(tmp_path / "c.safetensors", {"c": np.zeros(2, np.complex128)})
