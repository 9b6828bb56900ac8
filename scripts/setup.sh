#!/usr/bin/env bash
# One command from a checkout to a runnable daemon: builds the Rust core into a
# virtualenv (.venv) with maturin and validates the example config.
# Then: sudo .venv/bin/hrneo run --config examples/hrneo.yaml
set -euo pipefail
cd "$(dirname "$0")/.."

command -v cargo >/dev/null || {
    echo "setup: needs a Rust toolchain (>= 1.85): https://rustup.rs" >&2
    exit 1
}
for tool in ipset iptables ip; do
    command -v "$tool" >/dev/null || echo "setup: warning: \`$tool\` not found (the daemon needs it)" >&2
done

[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/pip install --quiet --upgrade pip
.venv/bin/pip install --quiet "maturin>=1.7,<2" "pyyaml>=5.1"
VIRTUAL_ENV="$PWD/.venv" .venv/bin/maturin develop --quiet --release
.venv/bin/hrneo check --config examples/hrneo.yaml
echo "ready: sudo .venv/bin/hrneo run --config examples/hrneo.yaml"
