#!/bin/bash
# Every GPU check and measurement of the project, in parts that each fit a 10-minute call on a
# one-GPU machine (H100 / H200), logs kept under $OUT (default out/bench_gpu):
#
#   bash bench_gpu.sh tests     # tests/test_gpu.py alone (with TRITON_INTERPRET=0: compiled Triton
#                               # kernels; test_kernels.py interprets them on CPU tensors, so not the
#                               # whole suite): CUDA-graph decode, forward, bf16 step, against references
#   bash bench_gpu.sh kernels   # bench_logprobs.py at paper shape (N 8192, V 151936, H 2048, bf16)
#   bash bench_gpu.sh sampler   # bench_sampler.py --device=cuda: Qwen3-1.7B shape, batch 1 (decode
#                               # step against the read floor) and 64 (512-token prompts) vs transformers
#   bash bench_gpu.sh train     # bench_train.py --device=cuda: SFT step at 1.7B shape, tokens/s, MFU, memory
#   bash bench_gpu.sh all       # the four in turn (~10-15 minutes on an H100)
#
# The machine's own python3 runs them (PYTHON to change it): it needs torch with CUDA, triton,
# transformers, safetensors, tqdm and numpy, nothing else. Nothing here downloads anything.
# What each line means and what the goals are: BENCHMARKS.md ("GPU").
set -o pipefail
PY=${PYTHON:-python3}
LOG=${OUT:-out/bench_gpu}
mkdir -p "$LOG"
export PYTHONUNBUFFERED=1

part() {  # part NAME COMMAND...: run it, its output to the screen and to $LOG/NAME.log
  local name=$1; shift
  echo "== $name: $*"
  "$@" 2>&1 | tee "$LOG/$name.log"
}

"$PY" -c "import torch; assert torch.cuda.is_available(), 'bench_gpu.sh: no CUDA device'; print(torch.__version__, torch.cuda.get_device_name())" || exit 1
case ${1:-all} in
  tests)   part tests env TRITON_INTERPRET=0 "$PY" -m pytest tests/test_gpu.py -q -rs ;;
  kernels) part kernels "$PY" bench_logprobs.py --device=cuda --N=8192 --V=151936 --H=2048 --dtype=bfloat16 ;;
  sampler) part sampler "$PY" bench_sampler.py --device=cuda --skip_cache_free ;;
  train)   part train "$PY" bench_train.py --device=cuda ;;
  all)     failed=""  # every part runs even when one fails: GPU time is scarce
           for p in tests kernels sampler train; do bash "$0" "$p" || failed="$failed $p"; done
           if [ -n "$failed" ]; then echo "bench_gpu.sh: failed:$failed (logs in $LOG)" >&2; exit 1; fi ;;
  *)       echo "bench_gpu.sh: unknown part '$1' (tests, kernels, sampler, train or all)" >&2; exit 2 ;;
esac
