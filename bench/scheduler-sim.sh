#!/bin/sh
# Scale simulation of the scheduler: 10,000 jobs over 100 fake hosts (in-process agents on the
# fake runtime, SQLite store). Prints the planner's time, the time to converge, and memory.
# Usage: bench/scheduler-sim.sh [HOSTS] [APPS] [JOBS_PER_APP]
set -eu
cd "$(dirname "$0")/.."
exec cargo run --release -q -p slipway-scheduler --example sim -- "$@"
