# The include graph of include/lowbit flows one way: a header includes only
# headers of its own layer or below. Run by ctest (test include_layers):
#
#   cmake -DROOT=<source dir> -P cmake/check_layers.cmake
#
# Layers, bottom to top (README, "Architecture"). A file's layer is the first
# rule below whose pattern matches its path under include/lowbit.
set(_layers
  "0 core"            "^(version|parallel)\\.hpp$|^detail/(config|names|fp_contract|scalar_arch|large_buffer)\\.hpp$|^core/(error|numeric|finite|storage|utf8|view)\\.hpp$"
  "1 scheme"          "^scheme/|^(granularity|double_quant)\\.hpp$"
  "2 layout"          "^pack/|^formats/ggml(_types|_rows|_blocks|_kquants|_kquant_search|_validate|_view)?\\.hpp$"
  "3 kernels"         "^kernels/|^detail/xsimd_compat\\.hpp$"
  "4 algorithms"      "^algorithms/"
  "5 quantizer"       "^(quantizer|registry|metrics|calibrated)\\.hpp$|^formats/(ggml_quantized|ggml_convert|bnb|bnb_convert)\\.hpp$"
  "6 containers"      "^detail/file_io\\.hpp$|^formats/(json|gguf|gguf_value|gguf_read|gguf_write|safetensors|imatrix|imatrix_file)\\.hpp$"
  "7 pipelines"       "^formats/(model_config|ct_checkpoint|ct_quantize|gguf_quantize|gguf_recipes|bnb_checkpoint|mlx_checkpoint|gptq_checkpoint|gptq_quantize|awq_checkpoint|awq_quantize|hqq_checkpoint|calibration_file)\\.hpp$|^adapters/|^lowbit\\.hpp$")

if(NOT ROOT)
  message(FATAL_ERROR "check_layers: pass -DROOT=<lowbit source dir>")
endif()
set(_inc "${ROOT}/include/lowbit")

function(_layer_of rel out_level out_name)
  list(LENGTH _layers _n)
  math(EXPR _last "${_n} - 1")
  foreach(_i RANGE 0 ${_last} 2)
    math(EXPR _j "${_i} + 1")
    list(GET _layers ${_i} _name)
    list(GET _layers ${_j} _re)
    if(rel MATCHES "${_re}")
      string(REGEX MATCH "^[0-9]+" _lvl "${_name}")
      set(${out_level} ${_lvl} PARENT_SCOPE)
      set(${out_name} "${_name}" PARENT_SCOPE)
      return()
    endif()
  endforeach()
  set(${out_level} "" PARENT_SCOPE)
endfunction()

file(GLOB_RECURSE _headers RELATIVE "${_inc}" "${_inc}/*.hpp")
list(SORT _headers)
set(_errors 0)
set(_edges 0)
foreach(_h IN LISTS _headers)
  _layer_of("${_h}" _lh _nh)
  if(_lh STREQUAL "")
    message(NOTICE "error: include/lowbit/${_h}: in no layer: add it to cmake/check_layers.cmake")
    math(EXPR _errors "${_errors} + 1")
    continue()
  endif()
  file(STRINGS "${_inc}/${_h}" _lines)
  get_filename_component(_dir "${_h}" DIRECTORY)
  set(_lineno 0)
  foreach(_line IN LISTS _lines)
    math(EXPR _lineno "${_lineno} + 1")
    if(NOT _line MATCHES "^[ \t]*#[ \t]*include[ \t]*\"([^\"]+)\"")
      continue()
    endif()
    set(_target "${CMAKE_MATCH_1}")
    if(_dir STREQUAL "")
      set(_abs "${_inc}/${_target}")
    else()
      set(_abs "${_inc}/${_dir}/${_target}")
    endif()
    get_filename_component(_abs "${_abs}" ABSOLUTE)
    file(RELATIVE_PATH _rel "${_inc}" "${_abs}")
    if(NOT EXISTS "${_abs}")
      message(NOTICE "error: include/lowbit/${_h}:${_lineno}: includes \"${_target}\", which does not exist")
      math(EXPR _errors "${_errors} + 1")
      continue()
    endif()
    _layer_of("${_rel}" _lt _nt)
    math(EXPR _edges "${_edges} + 1")
    if(_lt STREQUAL "" OR _lt GREATER _lh)
      message(NOTICE "error: include/lowbit/${_h}:${_lineno}: layer ${_nh} includes ${_rel} (layer ${_nt}), "
                           "a layer above its own")
      math(EXPR _errors "${_errors} + 1")
    endif()
  endforeach()
endforeach()
list(LENGTH _headers _count)
if(_errors GREATER 0)
  message(FATAL_ERROR "check_layers: ${_errors} include(s) against the layer order in ${_count} headers")
endif()
message(STATUS "check_layers: ${_count} headers, ${_edges} includes, all flow downward")
