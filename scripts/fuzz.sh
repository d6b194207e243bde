#!/usr/bin/env bash
# Runs every cargo-fuzz target for SECONDS each (default 600), two at a
# time, starting from the committed seeds in fuzz/seeds/TARGET and keeping
# what it learns in fuzz/corpus/TARGET (not committed). Crashes land in
# fuzz/artifacts/TARGET; the summary of each run is in fuzz/logs/TARGET.log.
#
#   cargo install cargo-fuzz      # once
#   scripts/fuzz.sh 600
#
# cargo-fuzz needs nightly compiler flags; RUSTC_BOOTSTRAP=1 lets the
# stable toolchain accept them.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
secs=${1:-600}
export RUSTC_BOOTSTRAP=1
cargo fuzz build -O
mkdir -p logs
targets=(core_frames frame_decode envelope_verify audit_record checkpoint_note scenario_parse)
run() {
  local t=$1
  mkdir -p "corpus/$t"
  cargo fuzz run -O "$t" "corpus/$t" "seeds/$t" -- -max_total_time="$secs" -rss_limit_mb=2048 \
    > "logs/$t.log" 2>&1 && echo "$t: ok ($(grep -o 'Done [0-9]* runs' "logs/$t.log" | tail -1 || echo '? runs'))" \
    || { echo "$t: FAILED, see fuzz/logs/$t.log"; return 1; }
}
status=0
for ((i = 0; i < ${#targets[@]}; i += 2)); do
  run "${targets[i]}" & a=$!
  b=
  if ((i + 1 < ${#targets[@]})); then run "${targets[i + 1]}" & b=$!; fi
  wait $a || status=1
  if [ -n "$b" ]; then wait $b || status=1; fi
done
exit $status
