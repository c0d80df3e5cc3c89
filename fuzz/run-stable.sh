#!/usr/bin/env bash
# run-stable.sh TARGET [SECONDS]: coverage-guided fuzzing on a stable toolchain.
#
# cargo-fuzz needs nightly only for its sanitizers; libFuzzer's coverage feedback comes from
# SanitizerCoverage, which stable rustc enables through -Cpasses/-Cllvm-args. scepd forbids
# unsafe code, so panics (what these targets look for) need no AddressSanitizer.
# The corpus grows in a scratch copy (target/corpus-TARGET), never in corpus/ itself.
set -euo pipefail
cd "$(dirname "$0")"
target=${1:?usage: $0 TARGET [SECONDS]}
seconds=${2:-300}
triple=$(rustc -vV | sed -n 's/^host: //p')
export RUSTFLAGS="-Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
-Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table \
-Cllvm-args=-sanitizer-coverage-trace-compares --cfg fuzzing -Cdebug-assertions -Coverflow-checks"
# --target keeps RUSTFLAGS off build scripts and proc macros.
cargo build --release --target "$triple" --target-dir target/stable-cov --bin "$target"
work="target/corpus-$target"
mkdir -p "$work"
cp -n "corpus/$target"/* "$work"/
exec "target/stable-cov/$triple/release/$target" "$work" -max_total_time="$seconds" \
    -max_len=65536 -artifact_prefix="target/$target-"
