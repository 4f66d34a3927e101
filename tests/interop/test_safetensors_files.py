"""lowbit's safetensors reader and writer against the `safetensors` package (huggingface's own).

LOWBIT_SAFETENSORS_TOOL names the safetensors_tool program built from
tests/interop/safetensors_tool.cpp:
  safetensors_tool dump IN        JSON lines: header, then one per tensor
  safetensors_tool copy IN OUT    read with lowbit, write back with lowbit
  safetensors_tool sample OUT     a fixed set of tensors (see expected_sample below)
Both directions are checked: files safetensors.numpy.save_file writes are read by
lowbit with identical bytes, and files lowbit writes load with
safetensors.numpy.load_file / safe_open with identical arrays and metadata. Hand-made
corrupt headers are rejected by both.
"""

import json
import os
import struct
import subprocess

import numpy as np
import pytest

safetensors = pytest.importorskip("safetensors")
from safetensors import safe_open  # noqa: E402
from safetensors.numpy import load_file, save_file  # noqa: E402

TOOL = os.environ.get("LOWBIT_SAFETENSORS_TOOL")
pytestmark = pytest.mark.skipif(not TOOL, reason="set LOWBIT_SAFETENSORS_TOOL to the safetensors_tool program")

DTYPE_NAMES = {
    np.dtype(np.bool_): "BOOL", np.dtype(np.uint8): "U8", np.dtype(np.int8): "I8",
    np.dtype(np.int16): "I16", np.dtype(np.uint16): "U16", np.dtype(np.float16): "F16",
    np.dtype(np.int32): "I32", np.dtype(np.uint32): "U32", np.dtype(np.float32): "F32",
    np.dtype(np.float64): "F64", np.dtype(np.int64): "I64", np.dtype(np.uint64): "U64",
}


def fnv1a64(data: bytes) -> int:
    h = 0xCBF29CE484222325
    for b in data:
        h = ((h ^ b) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return h


def run_tool(*args):
    return subprocess.run([TOOL, *map(str, args)], capture_output=True)


def lowbit_dump(path):
    res = run_tool("dump", path)
    assert res.returncode == 0, res.stderr.decode(errors="replace")
    lines = [json.loads(line) for line in res.stdout.decode("utf-8").splitlines()]
    return lines[0], lines[1:]


def python_header(path):
    """The header as the file stores it, parsed by Python's json (keeps key order)."""
    data = open(path, "rb").read()
    (n,) = struct.unpack("<Q", data[:8])
    return n, json.loads(data[8:8 + n]), data[8 + n:]


def python_tensors():
    rng = np.random.default_rng(7)
    return {
        "model.embed.weight": rng.standard_normal((4, 6)).astype(np.float32),
        "model.layers.0.attn.q": rng.standard_normal((3, 5)).astype(np.float16),
        "f64": rng.standard_normal(7),
        "scalar": np.array(3.25, dtype=np.float64),
        "empty": np.zeros((0, 4), dtype=np.int32),
        "i8": np.array([-128, -1, 0, 1, 127], dtype=np.int8),
        "u8": np.arange(11, dtype=np.uint8),
        "i16": np.array([[-32768, 5], [7, 32767]], dtype=np.int16),
        "u16": np.array([0, 65535, 3], dtype=np.uint16),
        "i32": np.array([-(2**31), 2**31 - 1], dtype=np.int32),
        "u32": np.array([2**32 - 1], dtype=np.uint32),
        "i64": np.array([-(2**63), 2**63 - 1, 0], dtype=np.int64),
        "u64": np.array([2**64 - 1, 1], dtype=np.uint64),
        "mask": np.array([[True, False, True]], dtype=np.bool_),
        "caf\u00e9 \u2713": np.ones((2, 2, 2), dtype=np.float32),
    }


@pytest.mark.parametrize("metadata", [None, {"format": "np"}, {"a": "1", "unicode": "caf\u00e9 \U0001F600", "q": 'x"\\\n'}])
def test_python_file_read_by_lowbit(tmp_path, metadata):
    path = tmp_path / "py.safetensors"
    tensors = python_tensors()
    save_file(tensors, str(path), metadata=metadata)
    n, header, _ = python_header(path)

    head, infos = lowbit_dump(path)
    assert head["header_size"] == n
    assert head["data_offset"] == 8 + n
    assert head["metadata"] == metadata
    # Header order, dtypes, shapes, offsets and bytes all agree.
    assert [t["tensor"] for t in infos] == [k for k in header if k != "__metadata__"]
    for t in infos:
        arr = tensors[t["tensor"]]
        entry = header[t["tensor"]]
        assert t["dtype"] == entry["dtype"] == DTYPE_NAMES[arr.dtype]
        assert t["shape"] == entry["shape"] == list(arr.shape)
        assert t["data_offsets"] == entry["data_offsets"]
        assert t["fnv1a64"] == fnv1a64(np.ascontiguousarray(arr).tobytes())


@pytest.mark.parametrize("metadata", [None, {"format": "pt"}, {"a": "1", "b": "caf\u00e9"}])
def test_lowbit_copy_loads_in_python(tmp_path, metadata):
    src, dst = tmp_path / "py.safetensors", tmp_path / "lowbit.safetensors"
    tensors = python_tensors()
    save_file(tensors, str(src), metadata=metadata)
    res = run_tool("copy", src, dst)
    assert res.returncode == 0, res.stderr.decode(errors="replace")
    assert sorted(os.listdir(tmp_path)) == ["lowbit.safetensors", "py.safetensors"]  # no temporary left

    loaded = load_file(str(dst))
    assert loaded.keys() == tensors.keys()
    for k, arr in tensors.items():
        assert loaded[k].dtype == arr.dtype
        assert loaded[k].shape == arr.shape
        assert loaded[k].tobytes() == arr.tobytes()
    with safe_open(str(dst), framework="np") as f:
        assert f.metadata() == metadata
    # Same key order, same layout, same padding: with at most one metadata
    # pair (the reference writes a hash map's order) the files are identical.
    if metadata is None or len(metadata) <= 1:
        assert dst.read_bytes() == src.read_bytes()


def expected_sample():
    return {
        "u8": np.array([0, 1, 2, 3, 4, 5, 255], dtype=np.uint8),
        "layers.0.weight": (np.arange(12, dtype=np.float32) * 0.5 - 1.0).reshape(3, 4),
        "half": (0x3C00 + np.arange(5, dtype=np.uint16)).view(np.float16),
        "flags": np.array([True, False, True, True]),
        "big": ((np.arange(6, dtype=np.int64) - 3) << 40).reshape(2, 3),
        "scalar": np.array(2.5),
        "empty": np.zeros((0, 3), dtype=np.int32),
        "i8": np.array([[-128, -1], [0, 127]], dtype=np.int8),
        "u32": np.array([0, 1, 2**32 - 1], dtype=np.uint32),
    }


def test_lowbit_writer_loads_in_python(tmp_path):
    path = tmp_path / "sample.safetensors"
    res = run_tool("sample", path)
    assert res.returncode == 0, res.stderr.decode(errors="replace")
    assert os.listdir(tmp_path) == ["sample.safetensors"]

    loaded = load_file(str(path))
    expected = expected_sample()
    assert loaded.keys() == expected.keys()
    for k, arr in expected.items():
        assert loaded[k].dtype == arr.dtype, k
        assert loaded[k].shape == arr.shape, k
        assert np.array_equal(loaded[k], arr), k
    with safe_open(str(path), framework="np") as f:
        assert f.metadata() == {"format": "np", "unicode": "caf\u00e9 \u2713 \U0001F600", "quote": 'a"b\\c\nd', "empty": ""}
        assert list(f.keys()) == sorted(expected)

    # The header: __metadata__ first, tensors in the order added, padded with
    # spaces to a multiple of 8, data offsets by decreasing element size.
    n, header, data = python_header(path)
    assert n % 8 == 0
    raw = path.read_bytes()[8:8 + n]
    assert raw.rstrip(b" ") + b" " * (n - len(raw.rstrip(b" "))) == raw
    assert list(header) == ["__metadata__"] + list(expected)
    starts = {k: v["data_offsets"][0] for k, v in header.items() if k != "__metadata__"}
    by_offset = sorted(starts, key=lambda k: (starts[k], header[k]["data_offsets"][1]))
    assert by_offset == ["big", "scalar", "layers.0.weight", "empty", "u32", "half", "u8", "flags", "i8"]
    for k, arr in expected.items():
        assert (8 + n + starts[k]) % arr.dtype.itemsize == 0, k


def write_raw(path, header, data=b""):
    text = header.encode() if isinstance(header, str) else header
    path.write_bytes(struct.pack("<Q", len(text)) + text + data)


def entry(dtype, shape, begin, end):
    return {"dtype": dtype, "shape": shape, "data_offsets": [begin, end]}


CORRUPT = {
    "gap": ({"a": entry("U8", [2], 0, 2), "b": entry("U8", [2], 4, 6)}, 6),
    "overlap": ({"a": entry("U8", [4], 0, 4), "b": entry("U8", [4], 2, 6)}, 6),
    "trailing bytes": ({"a": entry("U8", [2], 0, 2)}, 3),
    "past the end": ({"a": entry("F32", [2], 0, 8)}, 4),
    "size mismatch": ({"a": entry("F32", [2], 0, 4)}, 4),
    "unknown dtype": ({"a": entry("F33", [1], 0, 4)}, 4),
    "negative dim": ({"a": entry("U8", [-1], 0, 0)}, 0),
    "float dim": ({"a": entry("U8", [2.0], 0, 2)}, 2),
    "shape overflow": ({"a": entry("U8", [2**32, 2**32], 0, 0)}, 0),
    "end before begin": ({"a": entry("U8", [0], 2, 0)}, 2),
    "sub-byte tail": ({"a": entry("F4", [3], 0, 2)}, 2),
    "metadata not strings": ({"__metadata__": {"k": 1}}, 0),
    "first not at 0": ({"a": entry("U8", [2], 2, 4)}, 4),
}


@pytest.mark.parametrize("name", sorted(CORRUPT))
def test_corrupt_headers_rejected_by_both(tmp_path, name):
    header, data_size = CORRUPT[name]
    path = tmp_path / "bad.safetensors"
    write_raw(path, json.dumps(header, separators=(",", ":")), bytes(range(data_size)))
    with pytest.raises(Exception):
        with safe_open(str(path), framework="np") as f:
            [f.get_tensor(k) for k in f.keys()]
    res = run_tool("dump", path)
    assert res.returncode == 1
    assert b"corrupt file" in res.stderr


@pytest.mark.parametrize("raw", [
    b"{}\0\0",                         # padding that is not whitespace
    b"[]",                             # not an object
    b'{"a":',                          # truncated JSON
    b'{"\xff":1}',                     # not UTF-8
    b'{"\\ud800":{}}',                 # lone surrogate
])
def test_malformed_json_rejected_by_both(tmp_path, raw):
    path = tmp_path / "bad.safetensors"
    write_raw(path, raw)
    with pytest.raises(Exception):
        safe_open(str(path), framework="np")
    res = run_tool("dump", path)
    assert res.returncode == 1
    assert b"corrupt file" in res.stderr


@pytest.mark.parametrize("header,data", [
    ('{"__metadata__":null}', b""),                                                   # null metadata
    ('  {"a":{"dtype":"U8","shape":[2],"data_offsets":[0,2],"extra":1}} \t\n', b"ab"),  # unknown field, whitespace
    ('{"b":{"dtype":"U8","shape":[1],"data_offsets":[2,3]},"a":{"dtype":"U8","shape":[2],"data_offsets":[0,2]}}', b"abc"),
    ('{"":{"dtype":"F8_E4M3","shape":[1],"data_offsets":[0,1]}}', b"x"),               # empty name
    ('{"a":{"dtype":"F4","shape":[4],"data_offsets":[0,2]}}', b"ab"),                   # sub-byte dtype
])
def test_unusual_but_valid_headers_accepted_by_both(tmp_path, header, data):
    path = tmp_path / "ok.safetensors"
    write_raw(path, header, data)
    with safe_open(str(path), framework="np") as f:
        keys = list(f.keys())
        metadata = f.metadata()
    head, infos = lowbit_dump(path)
    assert sorted(t["tensor"] for t in infos) == sorted(keys)
    assert head["metadata"] == metadata


def test_duplicate_keys_are_an_error_for_lowbit(tmp_path):
    # The reference's JSON decoding lets the last duplicate win; lowbit refuses
    # a header whose meaning depends on that.
    path = tmp_path / "dup.safetensors"
    write_raw(path, '{"a":{"dtype":"U8","shape":[2],"data_offsets":[0,2]},'
                    '"a":{"dtype":"U8","shape":[2],"data_offsets":[0,2]}}', b"ab")
    with safe_open(str(path), framework="np") as f:
        assert list(f.keys()) == ["a"]
    res = run_tool("dump", path)
    assert res.returncode == 1
    assert b'duplicate key "a"' in res.stderr
