"""Writes a few small valid safetensors files (standard library only) as fuzzing seeds."""
import json
import struct
import sys
from pathlib import Path


def write(path, tensors, metadata=None):
    """tensors: list of (name, dtype, shape, data bytes), laid out in order."""
    header, data, offset = {}, b"", 0
    if metadata is not None:
        header["__metadata__"] = metadata
    for name, dtype, shape, raw in tensors:
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + len(raw)]}
        data += raw
        offset += len(raw)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    path.write_bytes(struct.pack("<Q", len(text)) + text + data)


out = Path(sys.argv[1])
out.mkdir(parents=True, exist_ok=True)
write(out / "small.safetensors", [
    ("w", "F32", [2, 3], struct.pack("<6f", *range(6))),
    ("b", "BF16", [2], b"\x80\x3f\x00\x40"),
    ("s", "I64", [], struct.pack("<q", -5)),
    ("e", "U8", [0, 3], b""),
    ("p", "F4", [4], b"\x21\x43"),
], {"format": "pt", "note": "caf\u00e9"})
write(out / "empty.safetensors", [])
write(out / "meta_only.safetensors", [], {"a": "b"})
