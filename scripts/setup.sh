#!/usr/bin/env bash
# One command from a checkout to a runnable daemon: builds the Rust core (release)
# and installs hrneo into a virtualenv (.venv), then validates the example config.
# The install is a copy, not editable: scripts/test.sh's debug build (made in the
# checkout, for .venv-test) never replaces the one `hrneo run` uses here.
# Then: sudo .venv/bin/hrneo run --config examples/hrneo.yaml
set -euo pipefail
cd "$(dirname "$0")/.."

# On a fresh Debian/Ubuntu box (as root) install what is missing; elsewhere say what is.
need_apt=()
for tool in ipset iptables nft ip conntrack; do
    command -v "$tool" >/dev/null || need_apt+=("$tool")
done
python3 -c 'import venv, ensurepip' 2>/dev/null || need_apt+=(python3-venv)
export PATH="$HOME/.cargo/bin:$PATH"
if ! cargo --version >/dev/null 2>&1; then
    # Debian 12's plain rustc is 1.63; its `-web` packages carry a current Rust.
    need_apt+=(rustc-web cargo-web)
fi
if [ "${#need_apt[@]}" -gt 0 ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        pkgs=()
        for t in "${need_apt[@]}"; do
            case "$t" in ip) pkgs+=(iproute2) ;; nft) pkgs+=(nftables) ;; *) pkgs+=("$t") ;; esac
        done
        apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q \
            --no-install-recommends build-essential "${pkgs[@]}"
    else
        echo "setup: missing: ${need_apt[*]} (install them, or run this as root on Debian)" >&2
        exit 1
    fi
fi

[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/pip install --quiet --upgrade pip
.venv/bin/pip install --quiet .
.venv/bin/hrneo check --config examples/hrneo.yaml
echo "ready: sudo .venv/bin/hrneo run --config examples/hrneo.yaml"
