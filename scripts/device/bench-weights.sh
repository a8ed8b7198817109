# Sourced by the GPU scripts: puts the H = 16 benchmark weights at /tmp/router16.safetensors.
# The benchmarks, the PyTorch baseline and the feature-token accuracy check (T = 0.6627) use trained H = 16 weights.
# models/router.safetensors was such a file until 2026-12-06 and is H = 32 since (models/README.md), so the scripts
# take, in this order: $ROUTER16; router16.safetensors in one of the folders given; models/router.safetensors under the
# first folder given if its metadata says hidden 16. On the build machine, the last trained H = 16 file:
#   git show 5570948:models/router.safetensors > .device-train/router16.safetensors
bench_weights_h16() {
  local root="$1" c
  local found="${ROUTER16:-}"
  for c in "$@"; do
    [[ -z "$found" && -f "$c/router16.safetensors" ]] && found="$c/router16.safetensors"
  done
  if [[ -z "$found" && -f "$root/models/router.safetensors" ]] && python3 -c '
import json, struct, sys
with open(sys.argv[1], "rb") as f:
    n = struct.unpack("<Q", f.read(8))[0]
    sys.exit(0 if json.loads(f.read(n))["__metadata__"].get("hidden") == "16" else 1)' "$root/models/router.safetensors"; then
    found="$root/models/router.safetensors"
  fi
  if [[ -z "$found" ]]; then
    echo "no H = 16 benchmark weights: set ROUTER16 or bring router16.safetensors (git show 5570948:models/router.safetensors)" >&2
    return 2
  fi
  cp "$found" /tmp/router16.safetensors
}
