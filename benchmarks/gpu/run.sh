#!/usr/bin/env bash
# One-shot GPU check for a fresh machine with an NVIDIA GPU and no network
# (the H200 of METHOD.md: torch 2.11 + CUDA 13, Python 3.12), run from the
# checkout's root:
#
#     bash benchmarks/gpu/run.sh OUTDIR
#
# Steps, each with its own timeout inside a total of at most 9 minutes:
#   build      the extension for sm_90a only (pip install --no-build-isolation -e .)
#   tests      the CUDA tests: pytest tests -k cuda (marked or device-parametrised)
#   memcheck, racecheck, synccheck
#              compute-sanitizer on benchmarks/gpu/sanitize_ops.py (every op, small sizes)
#   bench      benchmarks/gpu/bench_ops.py: each op beside vectorised PyTorch
# Writes OUTDIR/summary.json (each step: status, seconds, exit code, what it
# found), OUTDIR/env.txt, a log per step and OUTDIR/bench.{json,md}: at most 8
# files. Without a GPU every GPU step is skipped with the reason and the
# script exits 0; with one it exits 1 if a step failed.
set -uo pipefail
cd "$(dirname "$0")/../.."

OUTDIR=${1:?usage: bash benchmarks/gpu/run.sh OUTDIR}
mkdir -p "$OUTDIR"
OUTDIR=$(cd "$OUTDIR" && pwd)
TOTAL_S=${STRUCTINF_GPU_TOTAL_S:-540}
T0=$SECONDS
STEPS="$OUTDIR/.steps.tsv"
: > "$STEPS"
PY=${PYTHON:-python3}
export PYTHONUNBUFFERED=1 PIP_DISABLE_PIP_VERSION_CHECK=1

left() { echo $((TOTAL_S - (SECONDS - T0))); }

# record NAME STATUS RC SECONDS LOG NOTE
record() { printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" "$5" "$6" >> "$STEPS"; echo "== $1: $2 ($4 s) $6"; }

# step NAME CAP_S LOG CMD...: runs CMD with a timeout of min(CAP_S, time left - RESERVE_S),
# appending its output to OUTDIR/LOG. NOTE: recorded with it; NO_TESTS_RC: an
# exit code that means "nothing to run" rather than a failure.
RESERVE_S=0
step() {
  local name=$1 cap=$2 log=$3
  shift 3
  local budget=$(( $(left) - RESERVE_S ))
  (( budget > cap )) && budget=$cap
  if (( budget < 15 )); then
    record "$name" skipped "" 0 "" "no time left in the ${TOTAL_S} s budget"
    return 1
  fi
  echo "== $name (timeout ${budget} s)"
  local s=$SECONDS rc
  timeout --kill-after=10 "$budget" "$@" >> "$OUTDIR/$log" 2>&1
  rc=$?
  local took=$((SECONDS - s)) status=failed
  if (( rc == 0 )); then status=ok
  elif (( rc == 124 || rc == 137 )); then status=timeout
  elif [[ -n "${NO_TESTS_RC:-}" && $rc == "$NO_TESTS_RC" ]]; then status="no tests"
  fi
  record "$name" "$status" "$rc" "$took" "$log" "${NOTE:-}"
  return $rc
}

write_summary() {
  GPU_REASON=$GPU_REASON "$PY" - "$OUTDIR" "$STEPS" "$((SECONDS - T0))" <<'EOF'
import json, os, re, sys
out, steps_file, total = sys.argv[1], sys.argv[2], int(sys.argv[3])
steps = []
for line in open(steps_file):
    name, status, rc, secs, log, note = line.rstrip("\n").split("\t")
    entry = {"step": name, "status": status, "rc": int(rc) if rc else None,
             "seconds": int(secs), "log": log or None, "note": note or None}
    path = os.path.join(out, log) if log else None
    if name in ("memcheck", "racecheck", "synccheck") and path and os.path.exists(path):
        parts = re.split(r"^=== (\w+) ===$", open(path, errors="replace").read(), flags=re.M)
        text = dict(zip(parts[1::2], parts[2::2])).get(name, "")
        m = re.findall(r"ERROR SUMMARY: (\d+) error", text)
        entry["sanitizer_errors"] = int(m[-1]) if m else None
    if name == "tests" and path and os.path.exists(path):
        m = re.findall(r"^=*\s*(.*(?:passed|failed|skipped|error|no tests ran).*?)\s*=*$",
                       open(path, errors="replace").read(), re.M)
        entry["pytest"] = m[-1] if m else None
    steps.append(entry)
summary = {"total_seconds": total, "gpu": not os.environ.get("GPU_REASON"),
           "no_gpu_reason": os.environ.get("GPU_REASON") or None, "steps": steps,
           "skipped": [s["step"] + ": " + (s["note"] or "") for s in steps if s["status"] == "skipped"],
           "failed": [s["step"] for s in steps if s["status"] in ("failed", "timeout")]}
with open(os.path.join(out, "summary.json"), "w") as f:
    json.dump(summary, f, indent=1)
print(json.dumps(summary, indent=1))
EOF
  rm -f "$STEPS"
}

# ---------------------------------------------------------------- the machine
{
  echo "date: $(date -u +%FT%TZ)"; echo "host: $(uname -a)"
  command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.mem --format=csv
  command -v nvcc >/dev/null && nvcc --version | tail -n 2
  "$PY" -c "import sys, torch; print('python', sys.version.split()[0], 'torch', torch.__version__, 'cuda', torch.version.cuda, 'available', torch.cuda.is_available())"
} > "$OUTDIR/env.txt" 2>&1

GPU_REASON=""
if ! command -v nvidia-smi >/dev/null 2>&1 || ! nvidia-smi -L >/dev/null 2>&1; then
  GPU_REASON="no NVIDIA GPU here (nvidia-smi missing or sees none)"
elif ! "$PY" -c "import sys, torch; sys.exit(0 if torch.version.cuda and torch.cuda.is_available() else 1)" 2>/dev/null; then
  GPU_REASON="torch here is not a CUDA build or sees no GPU"
fi
if [[ -n "$GPU_REASON" ]]; then
  for s in build tests memcheck racecheck synccheck bench; do
    record "$s" skipped "" 0 "" "$GPU_REASON"
  done
  "$PY" benchmarks/gpu/bench_ops.py --out "$OUTDIR" > /dev/null 2>&1 || true
  write_summary
  exit 0
fi

# ---------------------------------------------------------------------- build
export TORCH_CUDA_ARCH_LIST=9.0a STRUCTINF_CUDA=1 MAX_JOBS=${MAX_JOBS:-$(nproc)}
if [[ -z "${CUDA_HOME:-}" && -x /usr/local/cuda/bin/nvcc ]]; then export CUDA_HOME=/usr/local/cuda; fi
RESERVE_S=240  # keep time for the tests, the sanitizers and the benchmarks
NOTE="sm_90a" step build 240 build.log \
  "$PY" -m pip install --no-build-isolation --no-deps --no-index -e .
BUILD_RC=$?
if (( BUILD_RC == 0 )); then
  "$PY" -c "import torch, structinf.ops as o; assert o.HAS_EXTENSION and torch.ops.structinf._cuda_built(), 'no CUDA kernels in structinf._C'" >> "$OUTDIR/build.log" 2>&1 || BUILD_RC=1
fi
if (( BUILD_RC != 0 )); then
  tail -n 40 "$OUTDIR/build.log"
  for s in tests memcheck racecheck synccheck bench; do record "$s" skipped "" 0 "" "the build failed"; done
  write_summary
  exit 1
fi

# ---------------------------------------------------------------------- tests
RESERVE_S=200
NOTE="pytest tests -k cuda" NO_TESTS_RC=5 step tests 120 tests.log \
  "$PY" -m pytest tests -q -k cuda -p no:cacheprovider --no-header -rfE

# ----------------------------------------------------------- compute-sanitizer
SANITIZER=$(command -v compute-sanitizer || ls /usr/local/cuda/bin/compute-sanitizer 2>/dev/null || true)
RESERVE_S=100
for tool in memcheck racecheck synccheck; do
  if [[ -z "$SANITIZER" ]]; then
    record "$tool" skipped "" 0 "" "compute-sanitizer not found"
    continue
  fi
  echo "=== $tool ===" >> "$OUTDIR/sanitizer.log"
  # No caching allocator: each tensor its own allocation, so memcheck sees
  # an access past a tensor's end instead of landing in a cached neighbour.
  NOTE="compute-sanitizer --tool $tool" step "$tool" 90 sanitizer.log \
    env PYTORCH_NO_CUDA_MEMORY_CACHING=1 "$SANITIZER" --tool "$tool" --print-limit 50 \
    --error-exitcode 3 "$PY" benchmarks/gpu/sanitize_ops.py
done

# ---------------------------------------------------------------- benchmarks
RESERVE_S=5
BENCH_S=$(( $(left) - 45 ))
(( BENCH_S > 200 )) && BENCH_S=200
NOTE="B in {10,256,1024}, T in {30,100}, L in {17,25,400}" step bench 260 bench.log \
  "$PY" benchmarks/gpu/bench_ops.py --out "$OUTDIR" --budget-s "$BENCH_S"

write_summary
"$PY" -c "import json, sys; sys.exit(1 if json.load(open('$OUTDIR/summary.json'))['failed'] else 0)"
