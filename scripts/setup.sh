#!/usr/bin/env bash
# Idempotent set-up for a fresh Debian 12/13 machine: Debian packages, .venv, pinned Python deps.
# Re-running does nothing that is already done (packages checked with dpkg, venv stamped by the
# hash of the files that decide its content).
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3}
APT_PACKAGES=(swtpm swtpm-tools tpm2-tools libtss2-dev pkg-config gcc python3-dev python3-venv qemu-system-x86 ovmf postgresql chromium chromium-driver)

missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing Debian packages: ${missing[*]}"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

stamp_src=$(cat pyproject.toml requirements.lock | sha256sum | cut -c1-16)
if [ -f .venv/.setup-stamp ] && [ "$(cat .venv/.setup-stamp)" = "$stamp_src" ] && [ -x .venv/bin/vroot ]; then
  exit 0
fi
if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv with $($PY --version)"
  "$PY" -m venv .venv
fi
echo "setup: installing pinned Python dependencies (first run builds tpm2-pytss, about a minute)"
.venv/bin/python -m pip install -q --disable-pip-version-check -c requirements.lock -e '.[tm,dev]'
echo "$stamp_src" > .venv/.setup-stamp
