#!/usr/bin/env bash
# Renders a drill's report.html in headless Chromium (Debian's `chromium`
# package) and saves a PNG screenshot.
#
#   scripts/screenshot-report.sh RUN_DIR [OUT.png] [WIDTH,HEIGHT]
#
# Example (the picture in docs/):
#   cargo run --release -- drill run yalu-1950 --sim --out /tmp/yalu
#   scripts/screenshot-report.sh /tmp/yalu docs/drill-report.png
set -euo pipefail
run_dir=${1:?usage: $0 RUN_DIR [OUT.png] [WIDTH,HEIGHT]}
out=${2:-$run_dir/report.png}
size=${3:-1100,1500}
html=$(realpath "$run_dir/report.html")
browser=$(command -v chromium || command -v chromium-browser || true)
if [ -z "$browser" ]; then
  echo "chromium not found: install it with 'apt-get install chromium'" >&2
  exit 1
fi
profile=$(mktemp -d)
trap 'rm -rf "$profile"' EXIT
# The flags keep Chromium off the network (the page needs none) and quiet.
"$browser" --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
  --disable-background-networking --disable-component-update --disable-sync \
  --hide-scrollbars --user-data-dir="$profile" --window-size="$size" \
  --screenshot="$(realpath -m "$out")" "file://$html" 2>/dev/null
test -s "$out"
echo "wrote $out"
