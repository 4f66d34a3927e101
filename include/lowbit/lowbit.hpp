#pragma once
// lowbit: header-only weight quantizers for large language models.
// This umbrella header only includes the public headers.

#include "version.hpp"

#include "core/error.hpp"
#include "formats/json.hpp"
#include "core/numeric.hpp"
#include "core/view.hpp"

#include "scheme/affine.hpp"
#include "scheme/codebook.hpp"
#include "scheme/concepts.hpp"
#include "scheme/ggml_legacy.hpp"
#include "scheme/minifloat.hpp"

#include "double_quant.hpp"
#include "granularity.hpp"
#include "metrics.hpp"
#include "quantizer.hpp"
#include "registry.hpp"

#include "formats/bnb.hpp"
#include "formats/bnb_convert.hpp"
#include "formats/bnb_checkpoint.hpp"
#include "formats/ggml.hpp"
#include "formats/ggml_convert.hpp"
#include "formats/ggml_types.hpp"
#include "formats/gguf.hpp"
#include "formats/gguf_quantize.hpp"
#include "formats/gguf_recipes.hpp"
#include "formats/imatrix.hpp"
#include "formats/ct_checkpoint.hpp"
#include "formats/gptq_checkpoint.hpp"
#include "formats/hqq_checkpoint.hpp"
#include "formats/mlx_checkpoint.hpp"
#include "formats/safetensors.hpp"

#include "algorithms/hqq.hpp"
#include "algorithms/rtn.hpp"
#include "parallel.hpp"
#include "kernels/bnb.hpp"
#include "kernels/dequantize.hpp"
#include "kernels/dispatch.hpp"
#include "pack/pack.hpp"
