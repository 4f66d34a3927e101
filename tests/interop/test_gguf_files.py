"""lowbit's GGUF reader and writer against the `gguf` package (ggml's own Python code).

LOWBIT_GGUF_TOOL names the gguf_tool program built from tests/interop/gguf_tool.cpp:
  gguf_tool dump IN      JSON lines: header, one per metadata pair, one per tensor
  gguf_tool copy IN OUT  read with lowbit, write back with lowbit
Both directions are checked: files gguf.GGUFWriter writes are read by lowbit, and
files lowbit writes are read by gguf.GGUFReader.
"""

import json
import os
import struct
import subprocess

import numpy as np
import pytest

gguf = pytest.importorskip("gguf")
from gguf import GGMLQuantizationType as Q  # noqa: E402
from gguf import GGUFValueType as V  # noqa: E402

TOOL = os.environ.get("LOWBIT_GGUF_TOOL")
pytestmark = pytest.mark.skipif(not TOOL, reason="set LOWBIT_GGUF_TOOL to the gguf_tool program")

TYPE_NAMES = {
    V.UINT8: "uint8", V.INT8: "int8", V.UINT16: "uint16", V.INT16: "int16",
    V.UINT32: "uint32", V.INT32: "int32", V.FLOAT32: "float32", V.BOOL: "bool",
    V.STRING: "string", V.ARRAY: "array", V.UINT64: "uint64", V.INT64: "int64",
    V.FLOAT64: "float64",
}


def fnv1a64(data: bytes) -> int:
    h = 0xCBF29CE484222325
    for b in data:
        h = ((h ^ b) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return h


def run_tool(*args: str) -> str:
    res = subprocess.run([TOOL, *args], capture_output=True)
    assert res.returncode == 0, res.stderr.decode(errors="replace")
    return res.stdout.decode("utf-8")


def lowbit_dump(path):
    lines = [json.loads(line) for line in run_tool("dump", str(path)).splitlines()]
    header = lines[0]
    kvs = [x for x in lines[1:] if "key" in x]
    tensors = [x for x in lines[1:] if "tensor" in x]
    return header, kvs, tensors


def write_python_file(path, alignment=None):
    """Every scalar type, strings (empty, unicode), arrays (of strings, of arrays) and
    tensors of several ggml types."""
    w = gguf.GGUFWriter(str(path), "llama")
    if alignment is not None:
        w.add_custom_alignment(alignment)
    w.add_key_value("t.u8", 255, V.UINT8)
    w.add_key_value("t.i8", -128, V.INT8)
    w.add_key_value("t.u16", 65535, V.UINT16)
    w.add_key_value("t.i16", -32768, V.INT16)
    w.add_key_value("t.u32", 4294967295, V.UINT32)
    w.add_key_value("t.i32", -2147483648, V.INT32)
    w.add_key_value("t.f32", 0.15625, V.FLOAT32)
    w.add_key_value("t.bool_t", True, V.BOOL)
    w.add_key_value("t.bool_f", False, V.BOOL)
    w.add_key_value("t.str", "hello", V.STRING)
    w.add_key_value("t.str_empty", "", V.STRING)
    w.add_key_value("t.str_unicode", "héllo wörld ✓ 日本語 🦙", V.STRING)
    w.add_key_value("t.u64", 18446744073709551615, V.UINT64)
    w.add_key_value("t.i64", -9223372036854775808, V.INT64)
    w.add_key_value("t.f64", 2.718281828459045, V.FLOAT64)
    w.add_key_value("t.arr_i32", [1, -2, 3], V.ARRAY, sub_type=V.INT32)
    w.add_key_value("t.arr_u8", [0, 1, 255], V.ARRAY, sub_type=V.UINT8)
    w.add_key_value("t.arr_f32", [0.5, -1.25, 3.0], V.ARRAY, sub_type=V.FLOAT32)
    w.add_key_value("t.arr_f64", [0.1, 1e300], V.ARRAY, sub_type=V.FLOAT64)
    w.add_key_value("t.arr_u64", [0, 2**64 - 1], V.ARRAY, sub_type=V.UINT64)
    w.add_key_value("t.arr_bool", [True, False, True], V.ARRAY, sub_type=V.BOOL)
    w.add_key_value("t.arr_str", ["a", "", "ü", "<|endoftext|>"], V.ARRAY, sub_type=V.STRING)
    w.add_key_value("t.arr_arr", [[1, 2], [3]], V.ARRAY, sub_type=V.ARRAY)
    w.add_key_value("t.arr_arr_str", [["x", "yy"], ["z"]], V.ARRAY, sub_type=V.ARRAY)

    rng = np.random.default_rng(7)
    w.add_tensor("f32", rng.standard_normal((3, 8)).astype(np.float32))
    w.add_tensor("f16", rng.standard_normal((5,)).astype(np.float16))  # 10 bytes: padded
    w.add_tensor("i32", np.arange(12, dtype=np.int32).reshape(2, 2, 3))
    q8 = rng.integers(0, 256, size=(4, 2 * 34), dtype=np.uint8)  # 4 rows of 64 q8_0 values
    w.add_tensor("blk.0.attn_q.weight", q8, raw_dtype=Q.Q8_0)
    q4k = rng.integers(0, 256, size=(1, 144), dtype=np.uint8)  # one q4_K row of 256
    w.add_tensor("q4k", q4k, raw_dtype=Q.Q4_K)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def leaves(value):
    """A lowbit dump value flattened as GGUFReader.contents() flattens nested arrays."""
    if isinstance(value, dict):
        out = []
        for item in value["items"]:
            out.extend(leaves(item) if isinstance(item, dict) else [item])
        return out
    return value


def leaf_type(value):
    while isinstance(value, dict) and value["element_type"] == "array" and value["items"]:
        value = value["items"][0]
    return value["element_type"]


def as_float(x):
    return float(x)  # "nan"/"inf" strings too


def check_same(path):
    """lowbit's dump of `path` agrees with GGUFReader's view of it."""
    reader = gguf.GGUFReader(str(path))
    header, kvs, tensors = lowbit_dump(path)
    fields = [f for f in reader.fields.values() if not f.name.startswith("GGUF.")]
    assert [kv["key"] for kv in kvs] == [f.name for f in fields]
    assert header["alignment"] == reader.alignment
    assert header["data_offset"] == reader.data_offset
    for kv, f in zip(kvs, fields):
        assert kv["type"] == TYPE_NAMES[f.types[0]], kv["key"]
        expected = f.contents()
        if f.types[0] == V.ARRAY:
            assert kv["value"]["element_type"] == TYPE_NAMES[f.types[1]], kv["key"]
            assert leaf_type(kv["value"]) == TYPE_NAMES[f.types[-1]], kv["key"]
            got = leaves(kv["value"])
        else:
            got = kv["value"]
        if f.types[-1] in (V.FLOAT32, V.FLOAT64):
            got = [as_float(x) for x in got] if isinstance(got, list) else as_float(got)
        assert got == expected, kv["key"]
    assert [t["tensor"] for t in tensors] == [t.name for t in reader.tensors]
    for mine, theirs in zip(tensors, reader.tensors):
        assert mine["type"] == int(theirs.tensor_type), mine["tensor"]
        assert mine["shape"] == [int(d) for d in theirs.shape], mine["tensor"]
        assert mine["size"] == int(theirs.n_bytes), mine["tensor"]
        assert mine["offset"] + reader.data_offset == theirs.data_offset, mine["tensor"]
        data = bytes(np.ascontiguousarray(theirs.data).view(np.uint8).reshape(-1))
        assert int(mine["fnv1a64"], 16) == fnv1a64(data), mine["tensor"]
    return reader


@pytest.mark.parametrize("alignment", [None, 64])
def test_lowbit_reads_gguf_writer_files(tmp_path, alignment):
    src = tmp_path / "py.gguf"
    write_python_file(src, alignment)
    check_same(src)


@pytest.mark.parametrize("alignment", [None, 64])
def test_gguf_reader_reads_lowbit_files(tmp_path, alignment):
    src = tmp_path / "py.gguf"
    out = tmp_path / "lowbit.gguf"
    write_python_file(src, alignment)
    run_tool("copy", str(src), str(out))
    check_same(out)
    # Same metadata and tensors in the same order, the same padding rules: the same bytes.
    assert out.read_bytes() == src.read_bytes()
    assert not list(tmp_path.glob("*.tmp.*"))


def test_gguf_reader_reads_lowbit_empty_arrays(tmp_path):
    """GGUFWriter refuses empty arrays, so this file is assembled by hand from the spec;
    lowbit copies it and GGUFReader must still find each array's element type (its
    `types` omits the element type of an empty array, so read it from the raw parts:
    key length, key, value type, element type, count, ...)."""

    def s(x: bytes) -> bytes:
        return struct.pack("<Q", len(x)) + x

    kvs = [
        (b"e.u32", struct.pack("<IIQ", 9, 4, 0)),
        (b"e.str", struct.pack("<IIQ", 9, 8, 0)),
        (b"e.i64", struct.pack("<IIQ", 9, 11, 1) + struct.pack("<q", -5)),
    ]
    body = b"GGUF" + struct.pack("<IQQ", 3, 0, len(kvs))
    for key, value in kvs:
        body += s(key) + value
    src = tmp_path / "empty.gguf"
    src.write_bytes(body)
    out = tmp_path / "copy.gguf"
    run_tool("copy", str(src), str(out))
    reader = gguf.GGUFReader(str(out))
    fields = [f for f in reader.fields.values() if not f.name.startswith("GGUF.")]
    assert [f.types[0] for f in fields] == [V.ARRAY] * 3
    assert [int(f.parts[3][0]) for f in fields] == [V.UINT32, V.STRING, V.INT64]
    assert [int(f.parts[4][0]) for f in fields] == [0, 0, 1]
    # lowbit pads the end of the tensor infos to the alignment even with no tensors.
    assert out.read_bytes() == body + bytes(-len(body) % 32)
    assert reader.fields["e.i64"].contents() == [-5]
    _, dumped, _ = lowbit_dump(out)
    assert [d["value"]["element_type"] for d in dumped] == ["uint32", "string", "int64"]
