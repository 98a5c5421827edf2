#!/usr/bin/env bash
# Every GPU check of this repository in one go, for a lent GPU machine (docs/benchmarks.md has the
# results). Each check has its own time limit, so one that hangs cannot take the others' time.
#
#   bash benchmarks/gpu_checks.sh [LOGDIR]      # logs in LOGDIR (default: $OUT, else ./gpu-logs)
#
# Packages the GPU image lacks (torchao, starlette, uvicorn) travel as wheels in .whl/ (see
# /work/.library/device/README.md); the repository itself is installed without dependencies.
set -u
LOG=${1:-${OUT:-gpu-logs}}
mkdir -p "$LOG"
export PYTHONUNBUFFERED=1
if compgen -G ".whl/*.whl" >/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl \
    && export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
python3 -m pip install -q --no-deps --no-build-isolation --no-index -e . >/dev/null 2>&1 || echo "editable install failed"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -c "import torch; print('torch', torch.__version__)"
cd benchmarks || exit 1

check() {  # check NAME SECONDS COMMAND...: run it under a limit, keep its output in LOG/NAME.log
  local name=$1 limit=$2
  shift 2
  echo "== $name (limit ${limit}s)"
  timeout "$limit" "$@" 2>&1 | grep -v "Failed to load\|UserWarning\|warn_once\|warnings.warn" | tee "$LOG/$name.log"
}

if [ -f finetune_memory.py ]; then
  check finetune 190 python3 finetune_memory.py --shape 7b --device cuda --modes full lora lora+ac
fi
check decode 120 python3 gpu_decode_check.py --tokens 128 --repeats 2 --compiled-only --profile
check serve 100 python3 serve.py --device cuda --repeats 2 --soak 100
CUDA_LAUNCH_BLOCKING=1 check flex-compiled 45 python3 gpu_attention_check.py --compiled flex
if [ "${GPU_CHECKS_INT8:-0}" = 1 ]; then
  check decode-int8 150 python3 gpu_decode_check.py --tokens 128 --repeats 2 --compiled-only --int8
fi
