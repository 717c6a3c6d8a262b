#!/usr/bin/env bash
# One device call: the carried peers installed (.carry/wheels: shared/device/stage-peer-wheels.sh;
# .carry/fa3: shared/device/stage-fa3.sh), this checkout's entry points registered without
# installing it, then the steps named in $STEPS (default "tests bench"), logs under $OUT:
#   tests   every GPU test: kernels against the reference, CUDA-graph replays, the fastest policy,
#           the registry's host-sync detection (peers importable); then the reference kernels on
#           CUDA and the engine against transformers (peers not importable: with FLA importable,
#           transformers 5.17 changes its own Gated DeltaNet functions)  ~5 min
#   bench   bench/gpu_ops.py, the per-op table with FLA / FA3 / cuDNN in the same run ($BENCH_ARGS)  ~2.5 min
#   engine  bench/gpu/engine_gpu.py --model ${MODEL:-qwen3.5-9b} $ENGINE_ARGS  ~3 min without the peer
set -u
python3 -m pip install -q --no-index --no-deps --target /tmp/site .carry/wheels/*.whl
mkdir -p /tmp/fa3 && tar xJf .carry/fa3/fa3.tar.xz -C /tmp/fa3
python3 bench/gpu/checkout_metadata.py /tmp/meta   # the registry finds this checkout's backends
export TOKENYARD_CACHE_DIR=${TOKENYARD_CACHE_DIR:-/tmp/tokenyard-cache}   # no platformdirs there
PEERS=/tmp/meta:/tmp/fa3:/tmp/site:$PWD
nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm,temperature.gpu --format=csv,noheader
t0=$(date +%s)
for step in ${STEPS:-tests bench}; do
  case $step in
    tests)
      PYTHONPATH=$PEERS python -m pytest -q -p no:cacheprovider -m gpu tests/gpu tests/registry \
        --ignore=tests/gpu/test_engine_on_gpu.py 2>&1 | tail -8 | tee $OUT/pytest_kernels.txt
      PYTHONPATH=/tmp/meta:$PWD python -m pytest -q -p no:cacheprovider -m gpu -s tests/reference \
        tests/gpu/test_engine_on_gpu.py tests/engine/test_cuda_graphs.py 2>&1 \
        | grep -E "fp32 page|bf16 \(|passed|failed|Error" | tee $OUT/pytest_engine.txt ;;
    bench)
      PYTHONPATH=$PEERS python bench/gpu_ops.py --out $OUT ${BENCH_ARGS:-} > $OUT/bench.txt 2>&1; echo "bench rc=$?"
      grep -v "^sweep\|^# \|^{" $OUT/bench.txt | tail -60 ;;
    engine)
      PYTHONPATH=$PEERS python bench/gpu/engine_gpu.py --out $OUT --model ${MODEL:-qwen3.5-9b} ${ENGINE_ARGS:-} \
        > $OUT/engine.txt 2>&1; echo "engine rc=$?"
      grep -v "it/s\]\|Writing\|^\s*$\|Warning\|_sync_debug\|^{" $OUT/engine.txt | cut -c1-220 | tail -40 ;;
  esac
  echo "after $step: $(( $(date +%s) - t0 ))s"
done
