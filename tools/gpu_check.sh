#!/usr/bin/env bash
# The GPU check of the backend switch, on a machine with an NVIDIA GPU; a few minutes.
#
#   tools/gpu_check.sh                 # install CuPy if needed, backend tests on CuPy, CPU-vs-GPU step times
#   tools/gpu_check.sh --cpu-dry-run   # the same steps with the strict device emulation in place of CuPy (no GPU)
#
# 1. CuPy: used as installed if it imports; else `pip install -e ".[gpu]"` (cupy-cuda12x, CUDA 12 drivers and
#    toolkits), falling back to `pip install -e ".[gpu-cuda13]"` (cupy-cuda13x, for CUDA 13: driver 580+) when the
#    driver reports CUDA 13 or the first one fails. Offline machines: put the wheels in a folder and set
#    PIP_FIND_LINKS=folder PIP_NO_INDEX=1. Pick by hand with: pip install cupy-cuda12x   (or cupy-cuda13x).
# 2. The backend tests under MINILORA_BACKEND=cupy: tests/device_backends.py then runs them on CuPy alone and
#    fails (does not skip) when CuPy or the GPU is missing.
# 3. benchmarks/bench_gpu.py: the step time of a d=512, 8-layer GPT (full and LoRA) on NumPy and on CuPy in one
#    process, and their ratio.
# Output goes to stdout and to $LOG (default: gpu_check.log in $OUT when set, else in $TMPDIR or /tmp).
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
DRY=0
[ "${1:-}" = "--cpu-dry-run" ] && DRY=1
LOG=${LOG:-${OUT:-${TMPDIR:-/tmp}}/gpu_check.log}
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
: > "$LOG"
say() { echo "== $*" | tee -a "$LOG"; }
run() { "$@" 2>&1 | tee -a "$LOG"; return "${PIPESTATUS[0]}"; }
status=0

say "machine: $(uname -m), $(getconf _NPROCESSORS_ONLN) CPUs, $($PY --version 2>&1)"
if [ "$DRY" = 1 ]; then
    DEVICE=strict
    BENCH=(--quick --backends numpy,strict --steps 2 --warmup 1)
    say "dry run on the CPU: the strict device emulation stands in for CuPy; no speed figure is a GPU's"
else
    DEVICE=cupy
    BENCH=()
    run nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv || say "nvidia-smi not found"
    cuda_major=$(nvidia-smi 2>/dev/null | sed -n 's/.*CUDA Version: *\([0-9]*\).*/\1/p' | head -1)
    if ! $PY -c "import cupy" 2>/dev/null; then
        if [ "${cuda_major:-12}" -ge 13 ]; then extras=(gpu-cuda13 gpu); else extras=(gpu gpu-cuda13); fi
        for extra in "${extras[@]}"; do
            say "CuPy missing: pip install -e .[$extra]"
            run $PY -m pip install -q -e ".[$extra]" && $PY -c "import cupy; cupy.cuda.runtime.getDeviceCount()" \
                && break
        done
    fi
    if ! run $PY -c "import cupy; n = cupy.cuda.runtime.getDeviceCount(); \
print('CuPy', cupy.__version__, 'CUDA runtime', cupy.cuda.runtime.runtimeGetVersion(), 'GPUs', n); assert n > 0"
    then
        say "FAILED: CuPy cannot use a GPU here (install: pip install cupy-cuda12x, or cupy-cuda13x for CUDA 13)"
        exit 1
    fi
fi

say "backend tests under MINILORA_BACKEND=$DEVICE"
tests=(tests/test_backend.py tests/nn/test_backends.py tests/nn/test_fast.py tests/lora/test_backends.py
       tests/qlora/test_backends.py)
for t in tests/methods/test_on_cupy.py; do [ -f "$t" ] && tests+=("$t"); done
MINILORA_BACKEND=$DEVICE run $PY -m pytest -q -p no:cacheprovider "${tests[@]}" || status=1

methods=$($PY -c "from minilora.__main__ import build_parser
sub = next(a for a in build_parser()._actions if a.dest == 'command').choices['finetune']
print(' '.join(next(a for a in sub._actions if a.dest == 'method').choices))")
say "CLI on $DEVICE: python -m minilora finetune --method M --steps 2 for M in: $methods"
for method in $methods; do
    MINILORA_BACKEND=$DEVICE run $PY -m minilora finetune --method "$method" --steps 2 --batch-size 8 || status=1
done

say "step times: benchmarks/bench_gpu.py ${BENCH[*]}"
run $PY benchmarks/bench_gpu.py "${BENCH[@]}" || status=1

[ "$status" = 0 ] && say "gpu_check: all steps passed" || say "gpu_check: FAILED (see above)"
exit "$status"
