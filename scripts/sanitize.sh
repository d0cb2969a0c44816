#!/usr/bin/env bash
# Builds t2 with AddressSanitizer + UndefinedBehaviorSanitizer in build-asan/
# and runs the unit and server tests under them (~17 min on 2 cores; not in CI).
# Any sanitizer report fails the run (halt_on_error).
set -euo pipefail
cd "$(dirname "$0")/.."
torch_prefix=$(python3 -c 'import torch; print(torch.utils.cmake_prefix_path)')
cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_PREFIX_PATH="$torch_prefix" \
  -DCMAKE_CXX_FLAGS="-fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer" \
  -DCMAKE_EXE_LINKER_FLAGS="-fsanitize=address,undefined" -DCMAKE_SHARED_LINKER_FLAGS="-fsanitize=address,undefined"
nice -n 5 cmake --build build-asan -j"${JOBS:-2}" --target t2 t2_tests t2_server_tests
# libtorch keeps allocations alive until exit and was not built with ASan: leak reports and
# container-overflow checks across its boundary are noise, everything else is reported.
export ASAN_OPTIONS="detect_leaks=0:detect_container_overflow=0:halt_on_error=1:abort_on_error=1"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1"
export OMP_NUM_THREADS=1
# The unit and server test binaries, whole (the reference tests need Python fixtures and are not included).
build-asan/tests/t2_tests "$@"
build-asan/tests/t2_server_tests "$@"
echo "sanitizers: clean"
