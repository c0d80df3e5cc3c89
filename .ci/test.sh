#!/usr/bin/env bash
# The test command (README "Running the tests"): installs what the tests need on a fresh
# Debian machine, then runs every test of the workspace once, sharing one build.
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
command -v scepclient >/dev/null || missing+=(scep)
command -v openssl >/dev/null || missing+=(openssl)
# micromdm's scepserver as the upstream CA of tests/upstream.rs runs behind socat in a network
# namespace (tests/tools/start-micromdm.sh).
command -v socat >/dev/null || missing+=(socat)
# SoftHSM2: the PKCS#11 token of tests/pkcs11.rs and ca/tests/pkcs11_token.rs.
command -v softhsm2-util >/dev/null || missing+=(softhsm2)
if ((${#missing[@]})); then
    echo "installing: ${missing[*]}"
    if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}"
fi

cargo test --workspace --all-targets
