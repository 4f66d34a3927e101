#pragma once
// GGUF files (versions 2 and 3, little-endian): a model of their metadata and
// tensors, a reader that validates every field over a read-only memory map,
// and a writer that replaces its target only once the whole file is written.
//
// Layout: "GGUF", u32 version, u64 tensor_count, u64 kv_count; kv_count pairs
// of (string key, u32 value type, value); tensor_count infos of (string name,
// u32 n_dims, u64 dims[n_dims], u32 ggml type, u64 offset); zero padding to
// general.alignment (default 32); the data section, where each tensor's
// offset is relative to its start and a multiple of the alignment. Strings are
// a u64 byte count and the bytes, UTF-8 (the reader and the writer check
// every key, string value and tensor name); arrays are a u32 element type, a
// u64 count and the elements.

//
// The pieces: gguf_value.hpp (the value model and the format's rules),
// gguf_read.hpp (the reader), gguf_write.hpp (the writer).

#include "gguf_read.hpp"
#include "gguf_value.hpp"
#include "gguf_write.hpp"
