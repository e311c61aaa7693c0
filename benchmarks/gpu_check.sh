#!/usr/bin/env bash
# The one script to run on a GPU machine: builds the extension with CUDA, takes the hardware
# ceilings (device copy bandwidth, bf16 matmul rate, the connector at the default geometry), runs
# the GPU-marked tests (compiled Triton and the CUDA backend), a CUDA-backend triage step (the
# bad-input call that crashed the H200 run, alone, under gdb and compute-sanitizer), the connector and end-to-end
# benchmarks on the acceptance shapes, then the kernel-level test files. Every step runs under
# `timeout`, sized from what is left of LC_GPU_CHECK_LIMIT_S (default 540 s), most valuable first.
#
#   bash benchmarks/gpu_check.sh [OUT_DIR]      OUT_DIR defaults to $OUT, else ./gpu_out
#
# OUT_DIR receives three files (the device tool brings back at most 8): summary.txt (the table,
# also printed last), gpu_check.tgz (every log and the benchmarks' JSON/PNG: env.txt, build.log,
# extension.log, ceilings.json, pytest_*.log, cuda_triage.log, bench_*.log, bench_kernels.json, connector.json,
# e2e.json) and
# ceilings.json. The archive is written on any exit, so a step that hangs loses nothing.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
OUT_DIR="${1:-${OUT:-./gpu_out}}"
mkdir -p "$OUT_DIR"
OUT_DIR="$(cd "$OUT_DIR" && pwd)"
FINAL_DIR="$OUT_DIR"
OUT_DIR="$FINAL_DIR/gpu_check"          # details; packed into gpu_check.tgz on exit
rm -rf "$OUT_DIR"; mkdir -p "$OUT_DIR"
if [ -n "${PYTHON:-}" ]; then PY="$PYTHON"; elif command -v python >/dev/null; then PY=python; else PY=python3; fi
LIMIT="${LC_GPU_CHECK_LIMIT_S:-540}"
# the steps to run, comma-separated (a rerun after a partial lease can take only some)
STEPS="${LC_GPU_STEPS:-build,extension,ceilings,pytest_gpu,bench_kernels,cuda_triage,bench_connector,bench_e2e,pytest_kernels}"
# a hung test must not eat the lease: a per-test limit where pytest-timeout is installed
PYTEST_TIMEOUT=()
START=$SECONDS
SUMMARY="$OUT_DIR/summary.txt"
pack() {
  [ -f "$SUMMARY" ] && cp "$SUMMARY" "$FINAL_DIR/summary.txt"
  [ -f "$OUT_DIR/ceilings.json" ] && cp "$OUT_DIR/ceilings.json" "$FINAL_DIR/ceilings.json"
  tar -czf "$FINAL_DIR/gpu_check.tgz" -C "$FINAL_DIR" gpu_check && rm -rf "$OUT_DIR"
}
trap pack EXIT
: > "$SUMMARY.rows"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 PYTHONUNBUFFERED=1
# Triton must compile for the GPU here (benchmarks, the GPU test pass); tests/conftest.py still
# turns the interpreter on for the plain pytest pass, whose CPU tests need it.
unset TRITON_INTERPRET

# seconds a step may take: its cap, but never more than what is left minus `reserve`
allowance() {
  local cap=$1 reserve=$(( $2 * LIMIT / 540 )) left   # reserves are sized for the default limit
  left=$(( LIMIT - (SECONDS - START) - reserve ))
  (( left < 5 )) && left=5
  (( cap < left )) && echo "$cap" || echo "$left"
}

# step NAME CAP RESERVE LOG -- command...   (records status and time; never aborts the script)
step() {
  local name=$1 cap=$2 reserve=$3 log=$4; shift 5
  if [[ ",$STEPS," != *",$name,"* ]]; then echo "== $name: not in LC_GPU_STEPS, skipped"; return 0; fi
  local t0=$SECONDS rc=0 lim
  lim=$(allowance "$cap" "$reserve")
  echo "== $name (limit ${lim}s) -> $log"
  timeout --kill-after=10 "$lim" "$@" > "$log" 2>&1 || rc=$?
  local status="ok"
  if (( rc == 124 || rc == 137 )); then status="TIMEOUT"; elif (( rc != 0 )); then status="FAIL($rc)"; fi
  printf '%-22s %-10s %6ss  %s\n' "$name" "$status" "$(( SECONDS - t0 ))" "$(tail -n 1 "$log" | cut -c1-90)" >> "$SUMMARY.rows"
  tail -n 3 "$log" || true
}

{
  echo "date: $(date -u +%FT%TZ)"
  echo "host: $(hostname)"
  echo "git: $(git rev-parse HEAD 2>/dev/null || echo none) $(git status --porcelain 2>/dev/null | wc -l) changed files"
  nvidia-smi || echo "nvidia-smi failed"
  nvcc --version 2>/dev/null | tail -n 2 || echo "nvcc: not found"
  "$PY" - <<'PYEOF'
import torch
print("torch", torch.__version__, "cuda", torch.version.cuda, "available", torch.cuda.is_available())
if torch.cuda.is_available():
    p = torch.cuda.get_device_properties(0)
    print("device", p.name, "cc", f"{p.major}.{p.minor}", "SMs", p.multi_processor_count, "mem GiB", round(p.total_memory / 2**30, 1))
try:
    import triton
    print("triton", triton.__version__)
except Exception as exc:  # noqa: BLE001
    print("triton: not importable:", exc)
PYEOF
} > "$OUT_DIR/env.txt" 2>&1
cat "$OUT_DIR/env.txt"

"$PY" -c "import pytest_timeout" 2>/dev/null && PYTEST_TIMEOUT=(--timeout="${LC_GPU_TEST_TIMEOUT_S:-45}")
step build 240 280 "$OUT_DIR/build.log" -- \
  env LC_CUDA_ARCHS=90 MAX_JOBS=16 "$PY" -m pip install --no-build-isolation --no-deps -v -e .
step extension 30 250 "$OUT_DIR/extension.log" -- "$PY" -c "
import lc_kernels, torch
from lc_kernels import backends, _ext
print('has_cuda', getattr(_ext.load(), 'has_cuda', lambda: None)(), 'why', _ext.why_unavailable())
print('cuda backend:', backends.get('cuda').unavailable_reason() or 'available', '| available', lc_kernels.available_backends())"
step ceilings 60 230 "$OUT_DIR/ceilings.log" -- "$PY" - "$OUT_DIR/ceilings.json" <<'PYEOF'
# Physical ceilings for the benchmarks: the connector forward is memory-bound, its floor is a
# device-to-device copy of x (SPEC §5); the bf16 matmul rate bounds what tensor cores can give.
import json, sys, torch
def timed(fn, iters):
    fn(); torch.cuda.synchronize()
    a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    a.record()
    for _ in range(iters):
        fn()
    b.record(); torch.cuda.synchronize()
    return a.elapsed_time(b) / 1e3 / iters
n = 1 << 29  # 1 GiB of bf16
src = torch.empty(n, device="cuda", dtype=torch.bfloat16).normal_()
dst = torch.empty_like(src)
s = timed(lambda: dst.copy_(src), 20)
copy_gbs = 2 * src.numel() * src.element_size() / s / 1e9
del src, dst
m = 8192
a = torch.randn(m, m, device="cuda", dtype=torch.bfloat16)
b = torch.randn(m, m, device="cuda", dtype=torch.bfloat16)
s = timed(lambda: a @ b, 20)
mm_tflops = 2 * m ** 3 / s / 1e12
res = {"copy_GBps": round(copy_gbs, 1), "bf16_matmul_8192_TFLOPs": round(mm_tflops, 1), "device": torch.cuda.get_device_name(0)}
del a, b
# The connector itself at the BERT-base default geometry (d=768, r=96, p=96, q=384, K=2), bf16,
# 128 sequences x 128 tokens, per available GPU backend: forward and forward+backward times and
# the forward's effective bandwidth (read x + write y) against the copy ceiling above.
try:
    import lc_kernels
    n, d, r, p, q = 128 * 128, 768, 96, 96, 384
    x = torch.randn(n, d, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    th = (0.02 * torch.randn(2, p, q, device="cuda")).requires_grad_()
    bias = torch.zeros(d, device="cuda", requires_grad=True)
    gy = torch.randn_like(x)
    for name in [b for b in ("cuda", "triton", "reference") if b in lc_kernels.available_backends()]:
        fwd = lambda: lc_kernels.connector(x.detach(), th.detach(), bias.detach(), 0.5, r, backend=name)  # noqa: E731
        both = lambda: torch.autograd.backward(lc_kernels.connector(x, th, bias, 0.5, r, backend=name), gy)  # noqa: E731
        tf, tb = timed(fwd, 50), timed(both, 20)
        res[f"{name}_fwd_us"] = round(tf * 1e6, 1)
        res[f"{name}_fwd_bwd_us"] = round(tb * 1e6, 1)
        res[f"{name}_fwd_GBps"] = round(2 * n * d * 2 / tf / 1e9, 1)
        print(f"{name:9s} forward {tf * 1e6:8.1f} us ({2 * n * d * 2 / tf / 1e9:6.0f} GB/s)  forward+backward {tb * 1e6:8.1f} us")
except Exception as exc:  # noqa: BLE001 - the ceilings above are still worth keeping
    res["connector_error"] = repr(exc)
    print("connector timing failed:", exc)
json.dump(res, open(sys.argv[1], "w"), indent=1)
print(f"copy {copy_gbs:.0f} GB/s (read+write), bf16 8192^3 matmul {mm_tflops:.0f} TFLOP/s")
PYEOF

# GPU tests with compiled Triton kernels (conftest interprets them only where CUDA is absent)
step pytest_gpu 150 150 "$OUT_DIR/pytest_gpu.log" -- \
  env TRITON_INTERPRET=0 "$PY" -m pytest tests -q -m gpu -rfEs --tb=short -p no:cacheprovider --durations=10 "${PYTEST_TIMEOUT[@]}"
# ---- Triton step (issue 13; owned with lc_kernels/triton): per-kernel timings of the v2 kernels ----
# forward, forward+z, dx, params and the W build separately, bf16, d = 768 first then 384 and 1024,
# N = 4k..256k, cold L2 (rotated inputs), CUDA-graph replays, against the copy floor and
# torch.compile(reference); no new shape after 90 s, so the step stays near two minutes.
step bench_kernels 130 200 "$OUT_DIR/bench_kernels.log" -- \
  "$PY" benchmarks/bench_kernels.py --dtype bfloat16 --d 768,384,1024 --n 4k,16k,64k,256k --repeats 15 \
    --max-seconds 90 --out "$OUT_DIR/bench_kernels.json"
# ---- end of the Triton step ----
# ---- CUDA backend triage (issue 14) ---------------------------------------------------------
# The H200 run died with a segmentation fault at the second bad-input call of the cuda binding (a
# non-contiguous x, which should raise "must be contiguous"). pytest_gpu above runs every bad-input
# call in its own process (tests/test_cuda_bad_inputs.py); this step takes the call named by
# LC_TRIAGE_CASE (default noncontiguous_x) alone in a fresh process, then under gdb for a native
# backtrace, then under compute-sanitizer (memcheck), each where the tool exists.
cuda_triage() {
  local case="${LC_TRIAGE_CASE:-noncontiguous_x}" rc=0 san=""
  echo "-- $case alone in a fresh process"
  "$PY" -X faulthandler tests/test_cuda_bad_inputs.py "$case" || rc=$?
  echo "exit status $rc (0: raised the expected error; 1: wrong or no error; >128: killed by signal $((rc > 128 ? rc - 128 : 0)))"
  if command -v gdb >/dev/null; then
    echo "-- gdb -batch -ex run -ex bt"
    gdb -q -batch -ex run -ex bt --args "$PY" tests/test_cuda_bad_inputs.py "$case" 2>&1 | grep -v "^\[New Thread\|^\[Thread" || true
  else
    echo "-- gdb: not installed"
  fi
  for cand in "$(command -v compute-sanitizer || true)" "${CUDA_HOME:-/usr/local/cuda}/bin/compute-sanitizer" \
      "$(dirname "$(readlink -f "$(command -v nvcc || echo /nonexistent)")")/compute-sanitizer"; do
    if [ -n "$cand" ] && [ -x "$cand" ]; then san="$cand"; break; fi
  done
  if [ -n "$san" ]; then
    echo "-- $san --tool memcheck"
    "$san" --tool memcheck --print-limit 20 "$PY" tests/test_cuda_bad_inputs.py "$case" || true
  else
    echo "-- compute-sanitizer: not found"
  fi
  return "$rc"
}
export PY
step cuda_triage 90 130 "$OUT_DIR/cuda_triage.log" -- bash -c "$(declare -f cuda_triage); cuda_triage"
# ---- end of CUDA backend triage --------------------------------------------------------------

# The acceptance shapes of SPEC §5 / the GPU goals: d = 768, bf16, N >= 16k; BERT-base e2e.
step bench_connector 120 80 "$OUT_DIR/bench_connector.log" -- \
  "$PY" benchmarks/bench_connector.py --device cuda --dtype bfloat16 --n "${LC_GPU_BENCH_N:-16k,64k,256k}" --d 768 \
    --repeats 20 --compile all --no-progress --seed 0 --out "$OUT_DIR"
step bench_e2e 90 20 "$OUT_DIR/bench_e2e.log" -- \
  "$PY" benchmarks/bench_e2e.py --device cuda --dtype bfloat16 --models bert-base --shapes 8x128,32x128 \
    --methods base,houlsby,pfeiffer,lora,layerconnect --modes eager,cuda-graphs --repeats 15 --no-progress \
    --seed 0 --out "$OUT_DIR"
# The kernel- and model-level test files with whatever time is left (the GLUE/serve tests need
# packages the device image may lack; CI runs them).
step pytest_kernels 200 10 "$OUT_DIR/pytest_kernels.log" -- \
  "$PY" -m pytest tests/test_triton_backend.py tests/test_ops.py tests/test_multitask_op.py \
    tests/test_cuda_backend.py tests/test_inplace.py tests/test_model.py tests/test_reference.py \
    -q -m "gpu or not gpu" -rfEs --tb=short -p no:cacheprovider "${PYTEST_TIMEOUT[@]}"
{
  echo
  echo "==================== gpu_check summary ($(( SECONDS - START ))s, out: $OUT_DIR) ===================="
  printf '%-22s %-10s %7s  %s\n' step status time "last line of its log"
  cat "$SUMMARY.rows"
  grep -hE "^(torch|device|triton)" "$OUT_DIR/env.txt" || true
  grep -hE "forward|copy" "$OUT_DIR/ceilings.log" 2>/dev/null || true
  for f in pytest_gpu pytest_kernels; do
    echo "$f: $(grep -hE "passed|failed|error" "$OUT_DIR/$f.log" 2>/dev/null | tail -n 1)"
  done
  # the Triton per-kernel table (bench_kernels.py prints it last)
  sed -n '/^per-kernel medians/,$p' "$OUT_DIR/bench_kernels.log" 2>/dev/null || true
} > "$SUMMARY"
rm -f "$SUMMARY.rows"
cat "$SUMMARY"
