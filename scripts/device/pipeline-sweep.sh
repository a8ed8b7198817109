#!/usr/bin/env bash
# scripts/device/pipeline-sweep.sh: package Node, a production node_modules, the native addon, Redis, the shared
# libraries canvas and Redis load, and DejaVu fonts for a host that has none of them (the 16-core GPU host), and
# write the script that runs the bench:pipeline fetch-process sweep there.
#
# Usage (on the build machine, from the repository root, after `npm ci && npm run build:native`):
#
#   bash scripts/device/pipeline-sweep.sh DIR
#
# DIR (e.g. .device) must lie inside the repository and be ignored by git (`echo /.device/ >> .git/info/exclude`)
# so that it travels with the working tree as a carried path. It receives:
#   node.xz          this machine's node binary
#   app.tar.xz       wt/: the tracked files of HEAD (git archive; SWEEP_REV=REV for another revision, so edits
#                    not committed stay out), node_modules pruned to production (tsx kept: bench-pipeline starts
#                    its workers with --import tsx; typescript dropped) and build/Release/moe_router.node
#   sys.tar.xz       bin/redis-server, bin/redis-cli, lib/ (every library canvas.node and redis-server load, except
#                    glibc itself), fonts/ (DejaVu Sans) and fonts.conf, plus lib/GLIBC.txt (newest glibc symbol
#                    version each library needs)
#   run-on-device.sh the device side
#
# On the 16-core host, from the repository root (the device tool: carry [".device"]); the benchmark runs in
# /opt/moe/wt, the packaged revision, not in the working tree that travelled:
#
#   bash .device/run-on-device.sh "$OUT"           # or any output folder
#
# which unpacks to /opt/moe (once; SWEEP_ROOT=DIR elsewhere), starts Redis on 6379 (SWEEP_REDIS_PORT), prints
# nproc / lscpu / free, and runs with MOE_BACKEND=cpu, each step under `timeout` and a total budget
# (SWEEP_BUDGET_S, default 480 s) so that partial results come back:
#   s10k-fwd   --tickers 10000 --sweep-fetch-procs 1,2,4,8,12 --json
#   s10k-rev   --tickers 10000 --sweep-fetch-procs 12,8,4,2,1 --json
#   s50k-fwd   --tickers 50000 --sweep-fetch-procs 1,2,4,8,12 --json
#   one10k-p8  --tickers 10000 --fetch-procs 8 --threads --json   (Redis peak, peak RSS per worker, per-thread CPU)
#   one50k-p8  --tickers 50000 --fetch-procs 8 --json             (Redis peak, peak RSS per worker)
#   s50k-rev   --tickers 50000 --sweep-fetch-procs 12,8,4,2,1 --json
# Not in the default list: r4-10k (--tickers 10000 --route-procs 4 --sweep-fetch-procs 2,8) and r4-50k
# (--tickers 50000 --route-procs 4 --sweep-fetch-procs 8), the same with four route processes; smoke (200
# tickers, 1,2) for a check of the packaging; attr10k and attr10k-p2 (--tickers 10000 [--fetch-procs 2] --attribute
# --json: the orchestration attributed to BullMQ and ioredis by CPU profiles). SWEEP_STEPS="s10k-fwd s50k-fwd" runs a subset or other steps.
# Each step's output goes to OUTDIR/<step>.txt, the console to OUTDIR/log.txt (at most 7 files: the device tool
# returns at most 8). A local check of the packaging:
#   SWEEP_ROOT=/tmp/moe SWEEP_REDIS_PORT=6390 SWEEP_STEPS=smoke bash DIR/run-on-device.sh /tmp/out
#
# The whole DIR is about 60 MiB (the device tool's working-tree limit is 64 MiB); if a larger build does not fit,
# carry app.tar.xz in one call (the script unpacks whatever is there and remembers it in /opt/moe) and the rest in
# the next, while the machine is still warm.
set -euo pipefail
DIR=${1:?usage: pipeline-sweep.sh DIR (inside the repository, git-ignored)}
REPO=$(git rev-parse --show-toplevel)
cd "$REPO"
mkdir -p "$DIR"
DIR=$(cd "$DIR" && pwd)
git check-ignore -q "$DIR" || { echo "$DIR is not ignored by git: echo /$(realpath --relative-to="$REPO" "$DIR")/ >> .git/info/exclude" >&2; exit 2; }
[ -f build/Release/moe_router.node ] || { echo 'build/Release/moe_router.node missing: npm run build:native' >&2; exit 2; }
SCRATCH=$(mktemp -d)
trap 'rm -rf "$SCRATCH"' EXIT

# Node
xz -T0 -c "$(readlink -f "$(command -v node)")" > "$DIR/node.xz"

# Production node_modules (tsx is a dependency and stays) and the addon
mkdir -p "$SCRATCH/wt/build/Release"
git archive "${SWEEP_REV:-HEAD}" | tar -x -C "$SCRATCH/wt"
git rev-parse "${SWEEP_REV:-HEAD}" > "$SCRATCH/wt/REVISION"
cp -a node_modules "$SCRATCH/wt/"
cp -a build/Release/moe_router.node "$SCRATCH/wt/build/Release/"
(cd "$SCRATCH/wt" && npm prune --omit=dev --offline --no-audit --no-fund >/dev/null 2>&1)
# typescript stays after the prune as valibot's optional peer; nothing at run time needs it. canvas's objects neither.
rm -rf "$SCRATCH/wt/node_modules/typescript" "$SCRATCH/wt/node_modules/.bin/tsc" "$SCRATCH/wt/node_modules/.bin/tsserver" \
  "$SCRATCH/wt/node_modules/canvas/build/Release/obj.target"
# Neither the bench nor the workers load these (the dashboard's queue board and its lodash, yahoo-finance2's MCP
# server and its hono): about 4 MB less to carry, which keeps DIR under the 64 MiB the device tool takes.
(cd "$SCRATCH/wt/node_modules" && rm -rf @bull-board lodash @modelcontextprotocol hono @hono)
tar -C "$SCRATCH" -cf - wt | xz -T0 -6 > "$DIR/app.tar.xz"

# Redis, the libraries of canvas and Redis (not glibc: the host's is used), fonts
S=$SCRATCH/sys
mkdir -p "$S/bin" "$S/lib" "$S/fonts"
cp -L "$(command -v redis-server)" "$(command -v redis-cli)" "$S/bin/"
ldd node_modules/canvas/build/Release/canvas.node "$(command -v redis-server)" "$(command -v redis-cli)" \
  | awk '/=> \//{print $3}' | sort -u \
  | grep -vE '/(libc\.so|ld-linux|libm\.so|libpthread\.so|libdl\.so|librt\.so|libresolv\.so|libutil\.so)' \
  | xargs -I{} cp -L {} "$S/lib/"
for f in "$S"/lib/*; do
  v=$( (objdump -T "$f" 2>/dev/null || true) | (grep -o 'GLIBC_[0-9.]*' || true) | sed 's/GLIBC_//' | sort -V -u | tail -1)
  echo "$(basename "$f") ${v:-0}"
done > "$S/lib/GLIBC.txt"
cp /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf /usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf "$S/fonts/"
tar -C "$S" -cf - . | xz -T0 -6 > "$DIR/sys.tar.xz"

# The device side
cat > "$DIR/run-on-device.sh" <<'DEVICE'
#!/usr/bin/env bash
# Device side of scripts/device/pipeline-sweep.sh: run from the repository root, OUTDIR as argument.
set -u
D=$(cd "$(dirname "$0")" && pwd)
OUTDIR=${1:-${OUT:-/tmp/sweep-out}}
BUDGET=${SWEEP_BUDGET_S:-480}
STEPS=${SWEEP_STEPS:-s10k-fwd s10k-rev s50k-fwd one10k-p8 one50k-p8 s50k-rev}
M=${SWEEP_ROOT:-/opt/moe}      # where the packages are unpacked
PORT=${SWEEP_REDIS_PORT:-6379}
T0=$SECONDS
mkdir -p "$OUTDIR"
exec > >(tee -a "$OUTDIR/log.txt") 2>&1
echo "=== host $(date -u +%FT%TZ)"; uname -a; nproc; lscpu | head -20; free -g; ldd --version | head -1
unx() { if command -v xz >/dev/null; then xz -dc "$1"; else python3 -c 'import lzma,shutil,sys; shutil.copyfileobj(lzma.open(sys.argv[1]), sys.stdout.buffer)' "$1"; fi; }
mkdir -p $M/bin
[ -f "$D/node.xz" ] && [ ! -x $M/bin/node ] && { unx "$D/node.xz" > $M/bin/node.part && chmod +x $M/bin/node.part && mv $M/bin/node.part $M/bin/node; }
[ -f "$D/sys.tar.xz" ] && [ ! -f $M/.sys ] && { unx "$D/sys.tar.xz" | tar -x -C $M && touch $M/.sys; }
[ -f "$D/app.tar.xz" ] && [ ! -f $M/.app ] && { unx "$D/app.tar.xz" | tar -x -C $M && touch $M/.app; }
for f in $M/bin/node $M/bin/redis-server $M/.app; do [ -e "$f" ] || { echo "unpacked so far; $f missing (carry the rest next)"; exit 3; }; done
# Libraries that need a newer glibc than the host's are dropped: the host's own copy serves then.
hv=$(ldd --version | head -1 | grep -oE '[0-9]+\.[0-9]+$')
while read -r lib v; do
  if [ "$(printf '%s\n%s\n' "$v" "$hv" | sort -V | tail -1)" != "$hv" ]; then echo "host glibc $hv < $v: using the host's $lib"; rm -f "$M/lib/$lib"; fi
done < $M/lib/GLIBC.txt
echo "unpacked in $((SECONDS - T0)) s; revision $(cat $M/wt/REVISION)"
cd $M/wt
export PATH=$M/bin:$PATH MOE_BACKEND=cpu REDIS_URL=redis://127.0.0.1:$PORT MOE_SKIP_SETUP=1
RUNENV=(env LD_LIBRARY_PATH=$M/lib FONTCONFIG_FILE=$M/fonts.conf)
mkdir -p /tmp/fc
printf '<?xml version="1.0"?>\n<fontconfig><dir>%s/fonts</dir><cachedir>/tmp/fc</cachedir></fontconfig>\n' "$M" > "$M/fonts.conf"
"${RUNENV[@]}" redis-cli -p $PORT ping >/dev/null 2>&1 || "${RUNENV[@]}" redis-server --port $PORT --save '' --appendonly no --daemonize yes
for i in $(seq 50); do "${RUNENV[@]}" redis-cli -p $PORT ping 2>/dev/null | grep -q PONG && break; sleep 0.2; done
"${RUNENV[@]}" redis-cli -p $PORT info server | grep -E 'redis_version|process_id'
"${RUNENV[@]}" node -e "
const { createCanvas } = require('canvas'); const c = createCanvas(60, 20); const x = c.getContext('2d');
x.font = '12px DejaVu Sans'; x.fillText('Hi', 2, 15); console.log('canvas ok', c.toBuffer('image/png').length, 'bytes');
require('sharp'); console.log('sharp ok');
const m = require('./build/Release/moe_router.node'); console.log('addon ok', Object.keys(m).slice(0, 6).join(' '));" || { echo 'smoke test failed'; exit 4; }
step() {
  local name=$1 limit=$2; shift 2
  local left=$((BUDGET - (SECONDS - T0) - 5))
  if (( left < 30 )); then echo "=== SKIP $name: ${left} s of the budget left"; return; fi
  (( limit > left )) && limit=$left
  echo "=== $name: $* (limit ${limit} s) at $(date +%T), load $(cut -d' ' -f1-3 /proc/loadavg)"
  local t=$SECONDS
  timeout -k 5 "$limit" "${RUNENV[@]}" node --import tsx src/cli/bench-pipeline.ts "$@" > "$OUTDIR/$name.txt" 2>&1
  local rc=$?
  grep -v '^{' "$OUTDIR/$name.txt"
  echo "=== $name: rc $rc in $((SECONDS - t)) s; Redis used_memory $("${RUNENV[@]}" redis-cli -p $PORT info memory | grep -E '^used_memory_human' | tr -d '\r')"
}
for s in $STEPS; do
  case $s in
    smoke) step smoke 120 --tickers 200 --sweep-fetch-procs 1,2 --json ;;
    s10k-fwd) step s10k-fwd 150 --tickers 10000 --sweep-fetch-procs 1,2,4,8,12 --json ;;
    s10k-rev) step s10k-rev 150 --tickers 10000 --sweep-fetch-procs 12,8,4,2,1 --json ;;
    s50k-fwd) step s50k-fwd 240 --tickers 50000 --sweep-fetch-procs 1,2,4,8,12 --json ;;
    one10k-p8) step one10k-p8 90 --tickers 10000 --fetch-procs 8 --threads --json ;;
    one50k-p8) step one50k-p8 120 --tickers 50000 --fetch-procs 8 --json ;;
    s50k-rev) step s50k-rev 240 --tickers 50000 --sweep-fetch-procs 12,8,4,2,1 --json ;;
    r4-10k) step r4-10k 70 --tickers 10000 --route-procs 4 --sweep-fetch-procs 2,8 --json ;;
    r4-50k) step r4-50k 60 --tickers 50000 --route-procs 4 --sweep-fetch-procs 8 --json ;;
    attr10k) step attr10k 120 --tickers 10000 --attribute --json ;;
    attr10k-p2) step attr10k-p2 120 --tickers 10000 --fetch-procs 2 --attribute --json ;;
    *) echo "unknown step $s" ;;
  esac
done
echo "=== done in $((SECONDS - T0)) s"
DEVICE
chmod +x "$DIR/run-on-device.sh"
du -sh "$DIR"/*
du -sh "$DIR"
