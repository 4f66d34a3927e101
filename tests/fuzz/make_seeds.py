"""Writes a few small valid GGUF files (via the gguf package) as fuzzing seeds."""
import sys
from pathlib import Path

import numpy as np
from gguf import GGUFWriter, GGMLQuantizationType as T
from gguf import quants

out = Path(sys.argv[1])
out.mkdir(parents=True, exist_ok=True)

w = GGUFWriter(str(out / "small.gguf"), "llama")
w.add_uint32("llama.block_count", 1)
w.add_string("general.name", "seed")
w.add_array("tokenizer.ggml.tokens", ["a", "b", "c"])
w.add_float32("x.f", 1.5)
w.add_bool("x.b", True)
w.add_tensor("t.f32", np.arange(64, dtype=np.float32).reshape(2, 32))
q = quants.quantize(np.linspace(-1, 1, 64, dtype=np.float32).reshape(2, 32), T.Q4_0)
w.add_tensor("t.q4_0", q, raw_dtype=T.Q4_0)
w.write_header_to_file()
w.write_kv_data_to_file()
w.write_tensors_to_file()
w.close()

w = GGUFWriter(str(out / "meta_only.gguf"), "llama")
w.add_array("nested", [[1, 2], [3]])
w.add_uint64("big", 2**40)
w.write_header_to_file()
w.write_kv_data_to_file()
w.write_tensors_to_file()
w.close()

# A model the quantize pipeline accepts (fuzz_quantize): llama, one layer,
# 2-D weights of whole blocks in f32 and f16, a norm.
w = GGUFWriter(str(out / "tiny_model.gguf"), "llama")
w.add_block_count(1)
w.add_head_count(1)
w.add_tensor("blk.0.attn_q.weight", np.linspace(-2, 2, 64, dtype=np.float32).reshape(2, 32))
w.add_tensor("blk.0.ffn_up.weight", np.linspace(-1, 3, 64, dtype=np.float16).reshape(2, 32))
w.add_tensor("blk.0.attn_norm.weight", np.ones(32, dtype=np.float32))
w.write_header_to_file()
w.write_kv_data_to_file()
w.write_tensors_to_file()
w.close()

# A GGUF importance matrix as llama-imatrix writes it (fuzz_imatrix).
w = GGUFWriter(str(out / "imatrix.gguf"), "")
w.add_string("general.type", "imatrix")
w.add_array("imatrix.datasets", ["seed.txt"])
w.add_uint32("imatrix.chunk_count", 2)
w.add_uint32("imatrix.chunk_size", 512)
w.add_tensor("blk.0.attn_q.weight.in_sum2", np.linspace(0, 4, 32, dtype=np.float32).reshape(1, 32))
w.add_tensor("blk.0.attn_q.weight.counts", np.array([[2.0]], dtype=np.float32))
w.write_header_to_file()
w.write_kv_data_to_file()
w.write_tensors_to_file()
w.close()

# The legacy .dat form: count, then per entry name length, name, ncall, nval,
# values; then the chunk count and the dataset name.
import struct
dat = struct.pack("<i", 1)
name = b"blk.0.attn_q.weight"
dat += struct.pack("<i", len(name)) + name + struct.pack("<ii", 1, 32)
dat += np.linspace(0, 1, 32, dtype=np.float32).tobytes()
dat += struct.pack("<i", 3) + struct.pack("<i", 8) + b"seed.txt"
(out / "imatrix.dat").write_bytes(dat)
