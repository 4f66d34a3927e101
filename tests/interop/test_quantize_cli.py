"""`lowbit quantize` and `lowbit inspect` on GGUF models written by the gguf
package; the results are read back with gguf.GGUFReader and the quantized
tensors compared with ggml's own quantizer (libggml-base).

Environment: LOWBIT_CLI (the lowbit program), LOWBIT_REF_GGML (optional).
"""
import ctypes
import os
import subprocess

import numpy as np
import pytest
from gguf import GGMLQuantizationType as T
from gguf import GGUFReader, GGUFWriter, quants

CLI = os.environ.get("LOWBIT_CLI", "")


def lowbit(*args, check=True):
    if not CLI or not os.path.exists(CLI):
        pytest.fail("LOWBIT_CLI must point at the built lowbit program")
    return subprocess.run([CLI, *map(str, args)], capture_output=True, text=True, check=check)


def write_model(path, dtype=np.float16, n_layer=2, n_embd=256, n_ff=512, n_vocab=320):
    rng = np.random.default_rng(5)
    w = GGUFWriter(str(path), "llama")
    w.add_block_count(n_layer)
    w.add_context_length(128)
    w.add_embedding_length(n_embd)
    w.add_feed_forward_length(n_ff)
    w.add_head_count(4)
    w.add_head_count_kv(2)
    w.add_string("general.name", "tiny test model")
    w.add_array("tokenizer.ggml.tokens", [f"t{i}" for i in range(n_vocab)])

    def t(name, *shape):  # numpy shape = reversed ggml ne
        w.add_tensor(name, (rng.standard_normal(shape) * 0.05).astype(dtype))

    t("token_embd.weight", n_vocab, n_embd)
    for i in range(n_layer):
        w.add_tensor(f"blk.{i}.attn_norm.weight", np.ones(n_embd, dtype=np.float32))
        t(f"blk.{i}.attn_q.weight", n_embd, n_embd)
        t(f"blk.{i}.attn_k.weight", n_embd // 2, n_embd)
        t(f"blk.{i}.attn_v.weight", n_embd // 2, n_embd)
        t(f"blk.{i}.attn_output.weight", n_embd, n_embd)
        w.add_tensor(f"blk.{i}.ffn_norm.weight", np.ones(n_embd, dtype=np.float32))
        t(f"blk.{i}.ffn_gate.weight", n_ff, n_embd)
        t(f"blk.{i}.ffn_up.weight", n_ff, n_embd)
        t(f"blk.{i}.ffn_down.weight", n_embd, n_ff)
    w.add_tensor("output_norm.weight", np.ones(n_embd, dtype=np.float32))
    t("output.weight", n_vocab, n_embd)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def fields(reader):
    out = {}
    for name, f in reader.fields.items():
        out[name] = [bytes(p) for p in f.parts]
    return out


@pytest.fixture(scope="module")
def ggml():
    path = os.environ.get("LOWBIT_REF_GGML")
    if not path or not os.path.exists(path):
        return None
    lib = ctypes.CDLL(path)
    lib.ggml_quantize_chunk.restype = ctypes.c_size_t
    lib.ggml_quantize_chunk.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64,
                                        ctypes.c_int64, ctypes.c_int64, ctypes.c_void_p]
    lib.ggml_validate_row_data.restype = ctypes.c_bool
    lib.ggml_validate_row_data.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_size_t]
    return lib


def test_q4_k_m_model(tmp_path, ggml):
    src, dst = tmp_path / "in.gguf", tmp_path / "out.gguf"
    write_model(src)
    r = lowbit("quantize", src, dst, "--type", "Q4_K_M", "--threads", "2")
    assert "quantized" in r.stdout and "bits/weight" in r.stdout
    a, b = GGUFReader(str(src)), GGUFReader(str(dst))
    # Every metadata key is kept; file_type says Q4_K_M (15).
    assert set(a.fields) <= set(b.fields)
    fa, fb = fields(a), fields(b)
    for k in fa:
        if k not in ("general.file_type", "GGUF.kv_count", "GGUF.tensor_count"):
            assert fa[k] == fb[k], k
    assert int(b.fields["general.file_type"].parts[-1][0]) == 15
    types = {t.name: t.tensor_type for t in b.tensors}
    # llama.cpp's Q4_K_M: norms stay f32; attn_v and ffn_down take q6_K on
    # the "more bits" layers (i < n/8, i >= 7n/8 or (i - n/8) % 3 == 2: of
    # two layers, only layer 1); output q6_K.
    assert types["blk.0.attn_norm.weight"] == T.F32
    assert types["blk.0.attn_q.weight"] == T.Q4_K
    assert types["blk.0.attn_v.weight"] == T.Q4_K
    assert types["blk.1.attn_v.weight"] == T.Q6_K
    assert types["blk.0.ffn_down.weight"] == T.Q4_K
    assert types["blk.1.ffn_down.weight"] == T.Q6_K
    assert types["blk.0.ffn_up.weight"] == T.Q4_K
    assert types["output.weight"] == T.Q6_K
    # The quantized bytes equal ggml's own quantizer on the same floats, and
    # the gguf package dequantizes them close to the originals.
    orig = {t.name: t for t in a.tensors}
    for t in b.tensors:
        if t.tensor_type in (T.F32, T.F16):
            continue
        x = np.asarray(orig[t.name].data, dtype=np.float32).reshape(-1, int(t.shape[0]))
        y = quants.dequantize(np.asarray(t.data), t.tensor_type).reshape(x.shape)
        rel = np.linalg.norm(x - y) / np.linalg.norm(x)
        assert rel < 0.12, (t.name, rel)
        if ggml is not None:
            bs, ts = quants.GGML_QUANT_SIZES[t.tensor_type]
            ref = np.zeros(x.size // bs * ts, dtype=np.uint8)
            ggml.ggml_quantize_chunk(int(t.tensor_type), np.ascontiguousarray(x).ctypes.data, ref.ctypes.data, 0,
                                     x.shape[0], x.shape[1], None)
            assert np.asarray(t.data).tobytes() == ref.tobytes(), t.name


def test_copy_round_trips_a_gguf_writer_file_unchanged(tmp_path):
    src, dst = tmp_path / "in.gguf", tmp_path / "copy.gguf"
    write_model(src, dtype=np.float32)
    lowbit("quantize", src, dst, "--type", "COPY")
    assert src.read_bytes() == dst.read_bytes()


def test_f32_type_keeps_f32_tensors_and_metadata(tmp_path):
    src, dst = tmp_path / "in.gguf", tmp_path / "f32.gguf"
    write_model(src, dtype=np.float32)
    lowbit("quantize", src, dst, "--type", "F32")
    a, b = GGUFReader(str(src)), GGUFReader(str(dst))
    for ta, tb in zip(a.tensors, b.tensors):
        assert ta.name == tb.name and tb.tensor_type == T.F32
        assert np.asarray(ta.data).tobytes() == np.asarray(tb.data).tobytes()
    assert int(b.fields["general.file_type"].parts[-1][0]) == 0


def test_inspect_lists_metadata_and_tensors(tmp_path):
    src = tmp_path / "in.gguf"
    write_model(src)
    out = lowbit("inspect", src).stdout
    assert "general.architecture" in out and "llama" in out
    assert "blk.1.ffn_down.weight" in out and "f16" in out


def test_bad_input_is_a_clear_error_and_writes_nothing(tmp_path):
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"GGUF\x03\x00\x00\x00" + b"\xff" * 16)
    out = tmp_path / "out.gguf"
    r = lowbit("quantize", bad, out, "--type", "Q4_K_M", check=False)
    assert r.returncode != 0 and "lowbit:" in r.stderr
    assert not out.exists()
    assert not any(p.name.startswith("out.gguf") for p in tmp_path.iterdir())
    src = tmp_path / "in.gguf"
    write_model(src)
    r = lowbit("quantize", src, out, "--type", "Q9_K", check=False)
    assert r.returncode != 0 and "Q4_K_M" in r.stderr  # lists the valid names


def write_imatrix_dat(path, entries, ncall=4):
    """llama.cpp's legacy imatrix file: int32 count; per entry int32 name length,
    name, int32 ncall, int32 nval, float32 sums; then int32 chunks and a dataset name."""
    import struct
    out = [struct.pack("<i", len(entries))]
    for name, values in entries.items():
        nb = name.encode()
        out += [struct.pack("<i", len(nb)), nb, struct.pack("<ii", ncall, len(values)),
                np.asarray(values, dtype="<f4").tobytes()]
    out += [struct.pack("<i", 10), struct.pack("<i", 4), b"test"]
    path.write_bytes(b"".join(out))


def test_imatrix_is_used_as_ggml_uses_it(tmp_path, ggml):
    if ggml is None:
        pytest.skip("LOWBIT_REF_GGML not built")
    src, dst, imf = tmp_path / "in.gguf", tmp_path / "out.gguf", tmp_path / "imatrix.dat"
    write_model(src, dtype=np.float32)
    a = GGUFReader(str(src))
    rng = np.random.default_rng(8)
    sums = {t.name: rng.random(int(t.shape[0])).astype(np.float32) * 8 + 0.01
            for t in a.tensors if t.name.startswith("blk.") and len(t.shape) == 2}
    write_imatrix_dat(imf, sums)
    r = lowbit("quantize", src, dst, "--type", "Q4_K_M", "--imatrix", imf)
    assert "imatrix" in r.stdout
    b = GGUFReader(str(dst))
    orig = {t.name: t for t in a.tensors}
    for t in b.tensors:
        if t.name not in sums:
            continue
        x = np.asarray(orig[t.name].data, dtype=np.float32).reshape(-1, int(t.shape[0]))
        bs, ts = quants.GGML_QUANT_SIZES[t.tensor_type]
        ref = np.zeros(x.size // bs * ts, dtype=np.uint8)
        w = (sums[t.name] / 4).astype(np.float32)  # llama-quantize divides the sums by ncall
        ggml.ggml_quantize_chunk(int(t.tensor_type), np.ascontiguousarray(x).ctypes.data, ref.ctypes.data, 0,
                                 x.shape[0], x.shape[1], w.ctypes.data)
        assert np.asarray(t.data).tobytes() == ref.tobytes(), t.name


def test_gguf_form_imatrix(tmp_path, ggml):
    if ggml is None:
        pytest.skip("LOWBIT_REF_GGML not built")
    src, dst, imf = tmp_path / "in.gguf", tmp_path / "out.gguf", tmp_path / "imatrix.gguf"
    write_model(src, dtype=np.float32)
    a = GGUFReader(str(src))
    rng = np.random.default_rng(9)
    # llama.cpp's GGUF imatrix: per tensor X, X.in_sum2 (sums of squared
    # activations per column) and X.counts (tokens seen); weight = sum / count.
    w = GGUFWriter(str(imf), "imatrix")
    sums = {}
    for t in a.tensors:
        if t.name.startswith("blk.") and len(t.shape) == 2:
            sums[t.name] = (rng.random(int(t.shape[0])) * 8 + 0.01).astype(np.float32)
            w.add_tensor(t.name + ".in_sum2", sums[t.name].reshape(1, -1))
            w.add_tensor(t.name + ".counts", np.array([[5.0]], dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    lowbit("quantize", src, dst, "--type", "Q5_K_M", "--imatrix", imf)
    b = GGUFReader(str(dst))
    orig = {t.name: t for t in a.tensors}
    for t in b.tensors:
        if t.name not in sums:
            continue
        x = np.asarray(orig[t.name].data, dtype=np.float32).reshape(-1, int(t.shape[0]))
        bs, ts = quants.GGML_QUANT_SIZES[t.tensor_type]
        ref = np.zeros(x.size // bs * ts, dtype=np.uint8)
        wts = (sums[t.name] / np.float32(5.0)).astype(np.float32)
        ggml.ggml_quantize_chunk(int(t.tensor_type), np.ascontiguousarray(x).ctypes.data, ref.ctypes.data, 0,
                                 x.shape[0], x.shape[1], wts.ctypes.data)
        assert np.asarray(t.data).tobytes() == ref.tobytes(), t.name


def write_poisoned_model(path, value, dtype=np.float32):
    """A one-layer model whose blk.0.attn_q.weight holds `value` at row 3, column 70."""
    rng = np.random.default_rng(8)
    w = GGUFWriter(str(path), "llama")
    w.add_block_count(1)
    w.add_head_count(4)
    w.add_tensor("blk.0.attn_norm.weight", np.ones(256, dtype=np.float32))
    q = (rng.standard_normal((256, 256)) * 0.05).astype(np.float32)
    q[3, 70] = value
    w.add_tensor("blk.0.attn_q.weight", q.astype(dtype))
    w.add_tensor("blk.0.ffn_up.weight", (rng.standard_normal((512, 256)) * 0.05).astype(dtype))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


@pytest.mark.parametrize("value", [np.inf, -np.inf, np.nan, 1e30, -1e30, 3.4e38, 1e5, -1e6, 65504.0, 3e8],
                         ids=lambda v: f"{v:g}")
@pytest.mark.parametrize("ftype", ["Q4_0", "Q4_1", "Q8_0", "Q4_K_M", "Q6_K", "IQ4_NL", "F16"])
def test_every_written_tensor_passes_ggml_validation(tmp_path, ggml, value, ftype):
    """lowbit quantize either writes tensors ggml's own ggml_validate_row_data
    accepts, or fails naming the tensor, row and column and writes nothing."""
    if ggml is None:
        pytest.skip("ggml's library (LOWBIT_REF_GGML) was not built")
    src, dst = tmp_path / "in.gguf", tmp_path / "out.gguf"
    write_poisoned_model(src, value)
    r = lowbit("quantize", src, dst, "--type", ftype, check=False)
    if r.returncode != 0:
        assert r.returncode == 1
        assert "tensor 'blk.0.attn_q.weight'" in r.stderr and "row 3, column" in r.stderr, r.stderr
        assert r.stderr.count("lowbit: ") == 1
        assert not dst.exists() and list(tmp_path.iterdir()) == [src]
        return
    assert np.isfinite(value), f"{ftype}: {value} was written"
    for t in GGUFReader(str(dst)).tensors:
        data = np.ascontiguousarray(t.data)
        assert ggml.ggml_validate_row_data(int(t.tensor_type), data.ctypes.data, data.nbytes), t.name
