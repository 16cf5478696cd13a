#!/bin/bash
# DDP budget runs while another process keeps one core busy (issue #27): N runs (default 20) of
#     torchrun --standalone --nproc-per-node 2 -m charlstm train CORPUS --budget 20s
# each given at most 3 x the budget before it counts as a hang; prints each run's wall time
# minus the budget, then the largest. The goal: every run within 5 s of the budget. Run from
# the project root:
#     bash benchmarks/ddp_budget.sh [N] [CORPUS] [BUDGET_SECONDS]
N=${1:-20}
CORPUS=${2:-tinyshakespeare.txt}
BUDGET=${3:-20}
TORCHRUN=$(command -v torchrun || echo "$(dirname "$(command -v python)")/torchrun")
WORK=$(mktemp -d)
python - <<'PY' &
import time
t = time.time()
while time.time() - t < 3600: pass
PY
BUSY=$!
trap 'kill $BUSY 2>/dev/null; rm -rf "$WORK"' EXIT
sleep 1
worst=-1000
for i in $(seq 1 "$N"); do
  s=$(date +%s.%N)
  timeout $((3 * BUDGET + 60)) "$TORCHRUN" --standalone --nproc-per-node 2 -m charlstm train \
    "$CORPUS" --budget "${BUDGET}s" --checkpoints "$WORK" --name "run$i" -q > /dev/null 2>&1
  rc=$?
  e=$(date +%s.%N)
  over=$(echo "$e - $s - $BUDGET" | bc)
  echo "run $i | exit $rc | wall - budget: ${over}s"
  worst=$(echo "if ($over > $worst) $over else $worst" | bc)
  rm -rf "$WORK/run$i"
done
echo "max wall - budget over $N runs: ${worst}s"
