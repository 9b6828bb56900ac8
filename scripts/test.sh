#!/usr/bin/env bash
# The whole test suite, as CI runs it (.ci/run): Rust checks and tests, the
# extension build, lint and types, then unit, kernel and end-to-end tests.
# Kernel and end-to-end tests need root; with CI=true a skipped one fails the run.
#
# It works in its own virtualenv (.venv-test: a debug build of the core and the
# test tools, installed here), so the release build that scripts/setup.sh put
# in .venv, which `hrneo run` uses, is never replaced by a slow debug build.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=${VENV:-.venv-test}
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
"$VENV/bin/pip" install --quiet --upgrade pip
# The linters are pinned: the rule families selected in pyproject.toml grow with
# new releases, and a new rule must not turn CI red on its own.
"$VENV/bin/pip" install --quiet "maturin>=1.9.4,<2" "pyyaml>=5.1" pytest pytest-timeout \
    hypothesis "ruff==0.17.6" "mypy==2.4.1" types-PyYAML
export PATH="$HOME/.cargo/bin:$PATH"
export VIRTUAL_ENV="$PWD/$VENV"
export PYO3_PYTHON="$VIRTUAL_ENV/bin/python"
PY="$VIRTUAL_ENV/bin/python"
REPORTS=target/test-reports
mkdir -p "$REPORTS"
rm -f "$REPORTS"/*.xml

step() { printf '\n==> %s\n' "$*"; }
# A failed check is recorded and the run goes on, so one run shows everything;
# only the extension build is fatal (nothing after it can run without it).
status=0
failed=()
check() {
    local name=$1
    shift
    step "$name"
    if ! "$@"; then
        status=1
        failed+=("$name")
    fi
}

if cargo fmt --version >/dev/null 2>&1; then
    check "cargo fmt --check" cargo fmt --all -- --check
fi
check "cargo clippy (-D warnings)" cargo clippy --all-targets -- -D warnings
check "cargo clippy --features python (-D warnings)" \
    cargo clippy --all-targets --features python -- -D warnings
check "cargo test" cargo test --quiet

step "maturin develop"
"$VIRTUAL_ENV/bin/maturin" develop --quiet

check "ruff" "$VIRTUAL_ENV/bin/ruff" check python tests
check "ruff format" "$VIRTUAL_ENV/bin/ruff" format --check python tests
check "mypy" "$VIRTUAL_ENV/bin/mypy"
# The hand-written stub must match the compiled module.
check "stubtest" "$PY" -m mypy.stubtest hrneo._core

for suite in unit kernel e2e; do
    [ -d "tests/$suite" ] || continue
    step "pytest tests/$suite"
    rc=0
    "$PY" -m pytest "tests/$suite" -rs -q --junitxml="$REPORTS/$suite.xml" || rc=$?
    # 5 = nothing collected: for kernel/e2e that means they did not run at all.
    if [ "$rc" -ne 0 ] && { [ "$rc" -ne 5 ] || [ "$suite" != unit ]; }; then
        status=1
        failed+=("pytest tests/$suite")
    fi
done

step "summary"
"$PY" - "$REPORTS" <<'PY' || status=1
"""Count results per suite; kernel/e2e skips are failures (they must run in CI)."""
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

bad = False
for suite in ("unit", "kernel", "e2e"):
    path = Path(sys.argv[1]) / f"{suite}.xml"
    if not path.exists():
        print(f"{suite:7} no report")
        bad = bad or suite != "unit"
        continue
    totals = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
    for ts in ET.parse(path).getroot().iter("testsuite"):
        for key in totals:
            totals[key] += int(ts.get(key, 0))
    passed = totals["tests"] - totals["failures"] - totals["errors"] - totals["skipped"]
    print(f"{suite:7} passed {passed:4}  failed {totals['failures']:3}  "
          f"errors {totals['errors']:3}  skipped {totals['skipped']:3}")
    if suite != "unit" and (totals["skipped"] or totals["tests"] == 0):
        print(f"  {suite}: tests were skipped or none ran; they must run here")
        bad = True
    bad = bad or bool(totals["failures"] or totals["errors"])
sys.exit(1 if bad else 0)
PY

if [ "$status" -ne 0 ]; then
    echo "FAILED: ${failed[*]:-summary}" >&2
    exit 1
fi
echo "ALL PASSED"
