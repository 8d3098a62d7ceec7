#!/usr/bin/env bash
# Build (once) a llama-cpp-python wheel that runs on every CPU of this architecture, and print
# the folder holding it, for `pip install --find-links`.
#
# Why not native: a native build (-march=native) on an Intel Xeon with AVX-512/AMX turns on
# llama.cpp's AMX weight-repacking path, which segfaults on the bundled GGUFs; and a native wheel
# cached in $HOME would be reused by a later machine with another CPU. So the wheel is built for
# a named instruction set chosen from this CPU's flags (x86-64: AVX2+FMA+F16C, the Haswell/Zen
# baseline; plus AVX-512 and those of its extensions the CPU has; never AMX; older CPUs get the
# SSE baseline), and cached under a key naming that target and the exact CMake flags: a machine
# with another instruction set builds its own.
# LLAMA_CMAKE_ARGS overrides the flags (e.g. "-DGGML_NATIVE=ON" for a machine-local build); the
# key then carries its hash, so it is never picked up by another target.
#
# usage: scripts/llama_wheel.sh PIP VERSION CACHE_DIR
set -euo pipefail
pip="$1" version="$2" cache="$3"

arch="$(uname -m)" os="$(uname -s)"
if [[ -n "${LLAMA_CMAKE_ARGS:-}" ]]; then
  flags="$LLAMA_CMAKE_ARGS"
  target="custom"
elif [[ "$os" == Darwin ]]; then
  flags="-DGGML_NATIVE=OFF"  # Apple Silicon: NEON + Metal, the same on every M-series chip
  target="darwin-$arch"
elif [[ "$arch" == x86_64 ]]; then
  has() { grep -qw "$1" /proc/cpuinfo; }
  if has avx2 && has fma && has f16c && has bmi2; then
    flags="-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON"
    target="x86_64-avx2"
    # AVX-512 (the x86-64-v4 set) reads prompts ~1.5x faster (71 tokens: 610 vs 930 ms on one
    # Zen 4 core; decoding +4 %). Its optional extensions are added one by one, each only where
    # this CPU has it, and named in the target so that no other CPU's wheel is picked up. AMX
    # stays off (its repacking path is what crashed, issue 13).
    if has avx512f && has avx512bw && has avx512cd && has avx512dq && has avx512vl; then
      flags="$flags -DGGML_AVX512=ON"
      target="x86_64-avx512"
      for extension in vbmi vnni bf16; do  # /proc/cpuinfo spells them avx512vbmi, avx512_vnni, avx512_bf16
        if has "avx512$extension" || has "avx512_$extension"; then
          flags="$flags -DGGML_AVX512_${extension^^}=ON"
          target="$target-$extension"
        fi
      done
    fi
    flags="$flags -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF"
  else
    flags="-DGGML_NATIVE=OFF -DGGML_AVX=OFF -DGGML_AVX2=OFF -DGGML_FMA=OFF -DGGML_F16C=OFF"
    target="x86_64-sse"
  fi
else
  flags="-DGGML_NATIVE=OFF"  # arm64 Linux and others: the architecture's baseline
  target="$os-$arch"
fi

# The flags' hash is part of the key too: a change of flags never reuses an older wheel.
digest() { if command -v sha256sum >/dev/null; then sha256sum; else shasum -a 256; fi | cut -c1-8; }
dir="$cache/llama-cpp-python-$version-$target-$(printf '%s' "$flags" | digest)"
if ! ls "$dir"/llama_cpp_python-"$version"-*.whl >/dev/null 2>&1; then
  mkdir -p "$dir"
  echo ">> building llama-cpp-python $version for $target ($flags); once per target, ~4 min on 2 cores" >&2
  started=$(date +%s)
  CMAKE_ARGS="$flags" CMAKE_BUILD_PARALLEL_LEVEL="$(nproc 2>/dev/null || sysctl -n hw.ncpu)" \
    "$pip" wheel --no-deps --no-cache-dir -w "$dir" "llama-cpp-python==$version" >&2
  echo ">> built in $(( $(date +%s) - started )) s: $dir" >&2
fi
echo "$dir"
