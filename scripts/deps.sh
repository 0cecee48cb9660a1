#!/usr/bin/env bash
# deps.sh -- make sure the Debian packages cairn builds and tests with are installed.
# Checks each with dpkg and runs apt-get only when something is missing, so a warm
# machine pays nothing.  Prints one line either way.
set -euo pipefail

PACKAGES=(
    gcc make cmake pkg-config
    liblmdb-dev libjansson-dev libxxhash-dev liblua5.4-dev libcmocka-dev libsodium-dev
    clang-14 libclang-rt-14-dev   # libFuzzer targets (tests/fuzz)
    clang-format-14               # make format, make format-check (.clang-format)
)

missing=()
for p in "${PACKAGES[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
        missing+=("$p")
    fi
done

if [ ${#missing[@]} -eq 0 ]; then
    echo "deps: all ${#PACKAGES[@]} Debian packages present"
    exit 0
fi

echo "deps: installing ${missing[*]}"
SUDO=()
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null; then SUDO=(sudo); else
        echo "deps: not root and no sudo; install these by hand: ${missing[*]}" >&2
        exit 1
    fi
fi
export DEBIAN_FRONTEND=noninteractive
"${SUDO[@]}" apt-get update -qq
"${SUDO[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
echo "deps: installed ${missing[*]}"
