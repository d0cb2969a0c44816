#!/usr/bin/env bash
# Installs t2's dependencies on a Debian 12 machine and builds it into build/.
#   Debian packages: the C++ libraries (cpp-httplib, nlohmann-json, spdlog,
#   sentencepiece, GoogleTest, CLI11, PCRE2 and ICU for tokenizer.json, libpng and
#   libjpeg for images) and the toolchain.
#   PyPI (requirements.txt): torch, whose wheel carries libtorch, and the
#   Python packages the tests use as reference and client.
# Safe to rerun: installed packages and a configured build are reused.
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(build-essential cmake pkg-config python3-pip libsentencepiece-dev libspdlog-dev libfmt-dev
          nlohmann-json3-dev libcpp-httplib-dev libssl-dev libgtest-dev libgmock-dev libcli11-dev
          libpcre2-dev libicu-dev libpng-dev libjpeg-dev)
missing=()
for p in "${packages[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if ((${#missing[@]})); then
  sudo=$([ "$(id -u)" -eq 0 ] && echo "" || echo sudo)
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}"
fi

python3 -m pip install --quiet --disable-pip-version-check -r requirements.txt

torch_prefix=$(python3 -c 'import torch; print(torch.utils.cmake_prefix_path)')
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release -DCMAKE_PREFIX_PATH="$torch_prefix" >/dev/null
cmake --build build -j"$(nproc)"
