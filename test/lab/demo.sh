#!/usr/bin/env bash
# `make demo`: bring the demo lab up; on a terminal, follow the blocked-traffic log until Ctrl-C, then tear down.
set -euo pipefail
cd "$(dirname "$0")/../.."
node bin/sluice.js lab up
if [ -t 0 ] && [ -t 1 ]; then
  echo "Following the blocked-traffic log (Ctrl-C stops and tears the lab down; 'make demo-down' does too)."
  trap 'echo; node bin/sluice.js lab down; exit 0' INT TERM
  node bin/sluice.js logs --state-dir .sluice-demo/state --since 1m --follow &
  wait $!
fi
