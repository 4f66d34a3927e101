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
