#!/usr/bin/env bash
# Everything apolo-node needs on a fresh Debian machine, from the project's own files.
#   scripts/setup.sh          the node: a virtual environment in .venv with apolo-node
#   scripts/setup.sh --test   also the test peers (dcmtk, Orthanc, PostgreSQL, dicom3tools)
#                             and the test and model extras (torch 2.13.0 CPU, transformers)
set -euo pipefail
cd "$(dirname "$0")/.."

want_test=0
[[ "${1:-}" == "--test" ]] && want_test=1

as_root() { if [[ $(id -u) -eq 0 ]]; then "$@"; else sudo "$@"; fi; }

debs=(python3-venv)
if (( want_test )); then
  # chromium and node: tests/test_web_browser.py shows the status page in headless Chromium
  debs+=(dcmtk orthanc postgresql dicom3tools chromium nodejs)
fi
missing=()
for pkg in "${debs[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
# npm may come with another build of node than Debian's: Debian's package only when none is here
if (( want_test )) && ! command -v npm >/dev/null; then missing+=(npm); fi
if (( ${#missing[@]} )); then
  echo "setup: installing Debian packages: ${missing[*]}" >&2
  as_root apt-get update -qq
  # Installing orthanc/postgresql must not start their system services (we start our own).
  policy=/usr/sbin/policy-rc.d
  added_policy=0
  if [[ ! -e $policy ]]; then
    printf '#!/bin/sh\nexit 101\n' | as_root tee "$policy" >/dev/null
    as_root chmod +x "$policy"
    added_policy=1
  fi
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  (( added_policy )) && as_root rm -f "$policy"
fi

python=${PYTHON:-python3}
if [[ ! -x .venv/bin/python ]]; then
  "$python" -m venv .venv
fi
# This machine's pip configuration names index folders that may be absent: drop that noise.
pip() {
  .venv/bin/python -m pip install -q --disable-pip-version-check "$@" 2>&1 \
    | { grep -v "is ignored: it is neither a file nor a directory" || true; }
}
if (( want_test )); then
  # torch 2.13.0 is the CPU build on this machine's disk; an unpinned torch pulls CUDA (GBs).
  pip "torch==2.13.0"
  pip -e ".[test,ml,postgres]"
  # playwright-core drives that Chromium; kept where ../shared/tools/viewer keeps it.
  viewer_node=${VIEWER_CACHE:-/tmp/apolo-viewer-cache}/node
  if [[ ! -d $viewer_node/node_modules/playwright-core ]]; then
    mkdir -p "$viewer_node"
    (cd "$viewer_node" && npm install --silent --no-audit --no-fund playwright-core@1.65.1 >/dev/null)
  fi
else
  pip -e .
fi
