#!/usr/bin/env bash
# Makes sure everything `npm run demo` and `npm test` need is in place, skipping each step that is already done:
#   1. Debian packages (canvas build deps, fonts, redis-server, cmake, g++, chromium for the dashboard's browser
#      test), installed when missing and root;
#   2. npm packages from the committed lock file (`npm ci`), re-run when package-lock.json changes;
#   3. the native router addon (`cmake-js compile`), rebuilt when native sources are newer than the addon.
# Set MOE_SKIP_SETUP=1 to skip it all (e.g. inside a prepared container).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

say() { printf '[setup] %s\n' "$*"; }

if [[ "${MOE_SKIP_SETUP:-0}" == "1" ]]; then
  say "MOE_SKIP_SETUP=1: skipping setup"
  exit 0
fi

# 1. Debian packages ------------------------------------------------------------------------------------------
# chromium: Debian's build, driven by playwright-core in test/dashboard-browser.test.ts (playwright's own browser
# download needs network access at test time and a second copy of the libraries Debian already ships).
debs=(libcairo2-dev libpango1.0-dev libjpeg-dev libgif-dev librsvg2-dev fonts-dejavu-core redis-server cmake g++ make python3 chromium)
missing=()
if command -v dpkg-query >/dev/null 2>&1; then
  for p in "${debs[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
      missing+=("$p")
    fi
  done
fi
if ((${#missing[@]})); then
  if [[ "$(id -u)" == "0" ]]; then
    say "installing Debian packages: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  elif command -v sudo >/dev/null 2>&1; then
    say "installing Debian packages with sudo: ${missing[*]}"
    sudo DEBIAN_FRONTEND=noninteractive apt-get update -qq
    sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  else
    say "missing Debian packages: ${missing[*]} (run as root or install them first)" >&2
    exit 1
  fi
else
  say "Debian packages present"
fi

# 2. npm packages ---------------------------------------------------------------------------------------------
# canvas builds from source with node-gyp: point it at the installed Node headers so no download is needed.
if [[ -z "${npm_config_nodedir:-}" ]]; then
  nodedir="$(dirname "$(dirname "$(readlink -f "$(command -v node)")")")"
  [[ -f "$nodedir/include/node/node.h" ]] && export npm_config_nodedir="$nodedir"
fi
lock_hash="$(sha256sum package-lock.json | cut -d' ' -f1)"
stamp="node_modules/.moe-lock-hash"
if [[ -f "$stamp" && "$(cat "$stamp")" == "$lock_hash" && -d node_modules/canvas/build/Release ]]; then
  say "npm packages up to date"
else
  say "npm ci"
  npm ci --no-audit --no-fund --loglevel=error
  echo "$lock_hash" > "$stamp"
fi

# 3. native addon ---------------------------------------------------------------------------------------------
addon="build/Release/moe_router.node"
if [[ -f "$addon" ]] && [[ -z "$(find native CMakeLists.txt -newer "$addon" -type f 2>/dev/null | head -n 1)" ]]; then
  say "native addon up to date"
else
  say "building native addon"
  npx --no-install cmake-js compile --out build --log-level error >/dev/null
  [[ -f "$addon" ]] || { say "native build did not produce $addon" >&2; exit 1; }
fi
say "ready"
