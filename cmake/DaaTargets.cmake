# Helpers that give every daa-swarm target the same warnings, standard and sanitizer flags.

add_library(daa_warnings INTERFACE)
target_compile_options(daa_warnings INTERFACE -Wall -Wextra -Werror)
# No code of ours reads errno after a math call; without it sqrt and friends vectorize.
target_compile_options(daa_warnings INTERFACE -fno-math-errno)
# Nor raises or tests floating-point exception flags; without them GCC may if-convert float
# selects (clamps, masks), so loops over them vectorize (kernels/fast_exp.hpp). Values unchanged.
target_compile_options(daa_warnings INTERFACE -fno-trapping-math)
if(DAA_NATIVE_ARCH)
  # Element-wise kernels (GELU, AdamW) vectorize only with the machine's full instruction set.
  # GCC 12.2 with AVX-512 miscompiles small constant initializers in its SLP vectorizer
  # ({10, 10, 0, 0} becomes all 10s); loop vectorization is unaffected, so SLP is turned off.
  # tests/unit/test_toolchain.cpp guards against this class of wrong code.
  target_compile_options(daa_warnings INTERFACE -march=native -fno-tree-slp-vectorize)
endif()
if(DAA_ENABLE_CUDA)
  # nvcc hands the host compiler pointer-to-member declarations with parentheses added
  # ("std::int64_t (RankAccount::*field)"), which -Wparentheses rejects under -Werror.
  target_compile_options(daa_warnings INTERFACE -Wno-parentheses)
endif()
if(DAA_SANITIZE)
  target_compile_options(daa_warnings INTERFACE -fsanitize=address,undefined -fno-omit-frame-pointer
                                                -fno-sanitize-recover=undefined)
  target_link_options(daa_warnings INTERFACE -fsanitize=address,undefined)
endif()

# daa_add_module(NAME SOURCES... DEPENDS...) : one static library per module of DESIGN.md §4.
function(daa_add_module name)
  cmake_parse_arguments(ARG "" "" "SOURCES;DEPENDS" ${ARGN})
  add_library(daa_${name} STATIC ${ARG_SOURCES})
  add_library(daa::${name} ALIAS daa_${name})
  target_include_directories(daa_${name} PUBLIC ${PROJECT_SOURCE_DIR}/include
                                                ${PROJECT_BINARY_DIR}/include)
  target_link_libraries(daa_${name} PUBLIC ${ARG_DEPENDS} PRIVATE daa_warnings)
  target_compile_features(daa_${name} PUBLIC cxx_std_20)
endfunction()
