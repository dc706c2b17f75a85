#!/usr/bin/env bash
# Make tools/promtool runnable, for the test that runs `promtool check metrics`.
#
# Uses a promtool already on PATH, else unpacks the one in Debian's `prometheus`
# package with `apt-get download` + `dpkg -x`: nothing is installed or started, and
# no root is needed unless apt's package lists must first be fetched.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
tools="$root/tools"
target="$tools/promtool"

works() { "$1" --version >/dev/null 2>&1; }

if [[ -x "$target" ]] && works "$target"; then
    exit 0
fi
mkdir -p "$tools"
rm -f "$target"

# A promtool on PATH, but not our own tools/ entry (make puts tools/ first on PATH).
while IFS= read -r found; do
    if [[ "$(dirname "$(readlink -f "$found")")" != "$(readlink -f "$tools")" ]] && works "$found"; then
        ln -s "$found" "$target"
        echo "promtool: using $found"
        exit 0
    fi
done < <(type -ap promtool || true)

fail() {
    echo "promtool: $*" >&2
    echo "promtool: install it yourself (Debian/Ubuntu: apt-get install prometheus, or put" \
        "a promtool binary on PATH) and re-run." >&2
    exit 1
}

command -v apt-get >/dev/null && command -v dpkg >/dev/null \
    || fail "not on PATH, and apt-get/dpkg are missing, so it can't be unpacked from Debian's prometheus package."

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
# apt drops privileges to _apt for downloads; let it write here.
chmod 755 "$work"

download() { (cd "$work" && apt-get download -q prometheus >"$work/apt.log" 2>&1); }

if ! download; then
    if [[ "$(id -u)" -ne 0 ]]; then
        cat "$work/apt.log" >&2
        fail "'apt-get download prometheus' failed and refreshing apt's lists ('apt-get update') needs root."
    fi
    echo "promtool: apt-get download failed; running apt-get update and retrying"
    apt-get update -q >/dev/null || { cat "$work/apt.log" >&2; fail "apt-get update failed."; }
    download || { cat "$work/apt.log" >&2; fail "'apt-get download prometheus' failed."; }
fi

dpkg -x "$work"/prometheus_*.deb "$work/root"
[[ -x "$work/root/usr/bin/promtool" ]] || fail "the prometheus package has no usr/bin/promtool."
cp "$work/root/usr/bin/promtool" "$target.tmp"
mv "$target.tmp" "$target"
works "$target" || fail "$target does not run."
echo "promtool: unpacked $("$target" --version 2>&1 | head -n1) into $target"
