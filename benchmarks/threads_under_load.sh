#!/bin/bash
# Sampling one stream while another process keeps a core busy (issue #22): `charlstm sample
# --length 5000` with torch on 2 threads, with torch on its default for one stream (1 thread),
# and with the numpy engine, 3 rounds, whole-command seconds. Run from the project root:
#     bash benchmarks/threads_under_load.sh checkpoints/RUN
M=${1:?usage: bash benchmarks/threads_under_load.sh RUN}
python - <<'PY' &
import time
t = time.time()
while time.time() - t < 600: pass
PY
BUSY=$!
sleep 1
for rep in 1 2 3; do
  for args in "--engine torch --threads 2" "--engine torch" "--engine numpy"; do
    s=$(date +%s.%N); charlstm sample -m $M --length 5000 --seed 1 $args > /dev/null 2>&1; e=$(date +%s.%N)
    echo "$rep | $args | $(echo "$e - $s" | bc)"
  done
done
kill $BUSY
