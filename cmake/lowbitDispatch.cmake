# lowbit_add_dispatch(<target> [ARCHS avx512bw avx2 sse4_1 neon])
#
# Gives <target> lowbit's kernels for each listed instruction set the target
# processor has, chosen at run time (beside the scalar reference): one
# generated TU per instruction set, compiled with its -m flags into a static
# library shared by every target that asks for the same list.
#   x86-64: avx512bw, avx2, sse4_1 (default: all three);
#   AArch64: neon (xsimd::neon64, every AArch64 CPU has it), always added there.
# Names of the other family's instruction sets are ignored, so one call serves
# both. On other processors the target keeps the header-only path.
include_guard(GLOBAL)

function(lowbit_add_dispatch target)
  cmake_parse_arguments(ARG "" "" "ARCHS" ${ARGN})
  if(NOT ARG_ARCHS)
    set(ARG_ARCHS avx512bw avx2 sse4_1)
  endif()
  foreach(_arch IN LISTS ARG_ARCHS)
    if(NOT _arch MATCHES "^(avx512bw|avx2|sse4_1|neon)$")
      message(FATAL_ERROR "lowbit_add_dispatch: unknown instruction set '${_arch}' (use avx512bw, avx2, sse4_1, neon)")
    endif()
  endforeach()
  if(CMAKE_SYSTEM_PROCESSOR MATCHES "^(x86_64|AMD64|amd64|i.86|x86)$")
    list(FILTER ARG_ARCHS EXCLUDE REGEX "^neon$")
  elseif(CMAKE_SYSTEM_PROCESSOR MATCHES "^(aarch64|arm64|ARM64)$")
    set(ARG_ARCHS neon)
  else()
    return()
  endif()
  if(NOT ARG_ARCHS)
    return()
  endif()
  list(SORT ARG_ARCHS)
  list(JOIN ARG_ARCHS "_" _key)
  set(_lib "lowbit_dispatch_${_key}")
  if(NOT TARGET ${_lib})
    set(_sources "")
    set(_defs LOWBIT_RUNTIME_DISPATCH)
    # The least capable instruction set first. Each TU also emits the inline
    # functions and templates its kernels use that are not specialised per
    # instruction set (std::string's, lowbit::error's, ...), and the linker
    # keeps one copy of each for the whole program: where the user's own
    # code does not emit one first, the archive member loaded first supplies
    # it. That copy must run on every machine the dispatcher runs kernels on
    # (an -mavx512bw copy of one such function ran into SIGILL on an AVX2
    # machine in an ASan build).
    set(_ordered "")
    foreach(_arch IN ITEMS sse4_1 avx2 avx512bw neon)
      if(_arch IN_LIST ARG_ARCHS)
        list(APPEND _ordered ${_arch})
      endif()
    endforeach()
    foreach(_arch IN LISTS _ordered)
      if(_arch STREQUAL "avx512bw")
        set(LOWBIT_ARCH_TYPE "xsimd::avx512bw")
        if(MSVC)
          set(_flags /arch:AVX512)
        else()
          set(_flags -mavx512f -mavx512cd -mavx512dq -mavx512bw -mavx2 -mfma -mf16c)
        endif()
      elseif(_arch STREQUAL "avx2")
        set(LOWBIT_ARCH_TYPE "xsimd::fma3<xsimd::avx2>")
        if(MSVC)
          set(_flags /arch:AVX2)
        else()
          set(_flags -mavx2 -mfma -mf16c)
        endif()
      elseif(_arch STREQUAL "sse4_1")
        set(LOWBIT_ARCH_TYPE "xsimd::sse4_1")
        if(MSVC)
          set(_flags "")
        else()
          set(_flags -msse4.1)
        endif()
      else()  # neon: AArch64's baseline, no flags
        set(LOWBIT_ARCH_TYPE "xsimd::neon64")
        set(_flags "")
      endif()
      string(TOUPPER "${_arch}" _ARCH)
      list(APPEND _defs LOWBIT_DISPATCH_HAS_${_ARCH})
      set(LOWBIT_ARCH_NAME "${_arch}")
      set(_tu "${CMAKE_BINARY_DIR}/lowbit_dispatch/${_lib}_${_arch}.cpp")
      configure_file("${LOWBIT_DISPATCH_TU_TEMPLATE}" "${_tu}" @ONLY)
      set_source_files_properties("${_tu}" PROPERTIES COMPILE_OPTIONS "${_flags}")
      list(APPEND _sources "${_tu}")
    endforeach()
    add_library(${_lib} STATIC ${_sources})
    # Shared libraries may link it too.
    set_target_properties(${_lib} PROPERTIES POSITION_INDEPENDENT_CODE ON)
    target_link_libraries(${_lib} PUBLIC lowbit::lowbit)
    target_compile_definitions(${_lib} INTERFACE ${_defs})
  endif()
  target_link_libraries(${target} PRIVATE ${_lib})
endfunction()
