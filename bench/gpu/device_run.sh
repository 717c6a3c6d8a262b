#!/usr/bin/env bash
# One device call: carried peers installed (.carry/wheels: shared/device/stage-peer-wheels.sh;
# .carry/fa3: shared/device/stage-fa3.sh), the GPU tests (extra pytest args from $TESTS), then
# bench/gpu_ops.py with $BENCH_ARGS; logs under $OUT. On the H100 the full GPU test grid takes about
# 3 minutes (Triton compiles) and the bench without --sweep about 2: give it a 420 s limit.
set -u
python3 -m pip install -q --no-index --no-deps --target /tmp/site .carry/wheels/*.whl
mkdir -p /tmp/fa3 && tar xJf .carry/fa3/fa3.tar.xz -C /tmp/fa3
python3 bench/gpu/checkout_metadata.py /tmp/site   # the registry finds this checkout's backends
export PYTHONPATH=/tmp/fa3:/tmp/site:$PWD
nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm,temperature.gpu --format=csv,noheader
t0=$(date +%s)
eval python -m pytest -q -p no:cacheprovider tests/gpu "${TESTS:-}" 2>&1 | tail -15 | tee $OUT/pytest.txt
echo "tests: $(( $(date +%s) - t0 ))s"
python bench/gpu_ops.py --out $OUT ${BENCH_ARGS:-} > $OUT/bench.txt 2>&1; echo "bench rc=$?"
echo "total: $(( $(date +%s) - t0 ))s"
grep -v "^sweep\|^# " $OUT/bench.txt | tail -60
