#!/usr/bin/env bash
# The build entry point the README uses.
#   ./run.sh serve   install build dependencies, build, run `holdfast serve` on embedded defaults
#   ./run.sh test    install build dependencies, then fmt check, clippy, and every test
#   ./run.sh deps    only install build dependencies (Debian/Ubuntu, as root)
set -euo pipefail
cd "$(dirname "$0")"

# Debian packages the build and the tests need:
#   clang libelf-dev zlib1g-dev pkg-config make: libbpf-sys (vendored libbpf) and the BPF programs
#   fonts-dejavu-core: holdfast-bench plot renders text in PNGs
#   systemd: systemd-analyze verify on the units in systemd/
#   file, binutils, libc6-dev: .ci/static-build (file(1), strip, libc.a for the static binary)
#   nodejs: node --test runs the JS client's tests (clients/js/test, from protocol/tests/js_golden.rs)
#   openssl: server/tls/make-test-cert.sh (test certificates) and the TLS tests that run it
#   python3-websockets, chromium: the WebSocket conformance set and the browser page test (tests/e2e/ws.rs)
DEBIAN_PACKAGES=(clang libelf-dev zlib1g-dev pkg-config make fonts-dejavu-core systemd file binutils libc6-dev nats-server nodejs python3-websockets chromium openssl)

deps() {
    local missing=()
    for package in "${DEBIAN_PACKAGES[@]}"; do
        dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
    done
    if ((${#missing[@]})); then
        local sudo=""
        [[ $(id -u) -eq 0 ]] || sudo="sudo"
        $sudo apt-get update
        DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y --no-install-recommends "${missing[@]}"
    fi
    command -v cargo >/dev/null || { echo "run.sh: cargo not found: install Rust with rustup (rust-toolchain.toml pins 1.95)" >&2; exit 1; }
}

case "${1:-}" in
    deps)
        deps
        ;;
    serve)
        deps
        shift
        cargo build --release -p holdfast-server
        exec target/release/holdfast serve "$@"
        ;;
    test)
        deps
        cargo fmt --all -- --check
        cargo clippy --workspace --all-targets -- -D warnings
        cargo test --workspace
        ;;
    *)
        echo "usage: ./run.sh serve|test|deps" >&2
        exit 2
        ;;
esac
