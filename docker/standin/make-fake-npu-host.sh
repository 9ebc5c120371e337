#!/usr/bin/env bash
# Lay out a FAKE Ascend NPU host in one folder, for docker/smoke-test.sh: what the NPU worker would mount from a
# real host, with the project's TEST DOUBLES (tests/doubles) where Huawei's tools would be. Nothing here drives an
# NPU. Layout (DIR = the first argument):
#
#   DIR/dev/davinci0 … davinci<N-1>, davinci_manager, devmm_svm, hisi_hdc
#                       character devices 1:3 (what /dev/null is) owned by root:DEVICE_GID, mode 0660, so the
#                       worker needs the group (ASCEND_DEVICE_GID) exactly as with the driver's HwHiAiUser group
#   DIR/driver/bin/npu-smi                      the npu-smi double               (ASCEND_DRIVER_HOST_DIR=DIR/driver)
#   DIR/driver/dcmi/                            empty
#   DIR/driver/Ascend/driver/lib64/{driver,common}/  libascend_hal.so is a text file: only its presence is checked
#   DIR/driver/Ascend/driver/version.info
#   DIR/ascend_install.info                                                      (ASCEND_INSTALL_INFO)
#   DIR/toolkit/set_env.sh, DIR/toolkit/latest/bin/atc (the atc double), latest/<arch>-linux/ascend_toolkit_install.info
#                                                                                (CANN_HOST_DIR=DIR/toolkit)
#   DIR/ais_bench-src/  an "ais_bench source" (setup.py + backend/setup.py) whose wheels install the ais_bench
#                       double as ais_bench and an empty aclruntime: what docker/Dockerfile.ascend builds from
#
# Usage: make-fake-npu-host.sh DIR [CHIPS (default 2)] [DEVICE_GID (default 1234)]   (as root: mknod, chown)
set -euo pipefail

dir=${1:?usage: make-fake-npu-host.sh DIR [CHIPS] [DEVICE_GID]}
chips=${2:-2}
gid=${3:-1234}
repo=$(cd "$(dirname "$0")/../.." && pwd)
doubles=$repo/tests/doubles
arch=$(uname -m)

rm -rf "$dir"
mkdir -p "$dir/dev" "$dir/driver/bin" "$dir/driver/dcmi" "$dir/driver/Ascend/driver/lib64/driver" \
  "$dir/driver/Ascend/driver/lib64/common" "$dir/toolkit/latest/bin" "$dir/toolkit/latest/$arch-linux"

names=(davinci_manager devmm_svm hisi_hdc)
for ((chip = 0; chip < chips; chip++)); do names+=("davinci$chip"); done
for name in "${names[@]}"; do
  mknod "$dir/dev/$name" c 1 3
  chown "0:$gid" "$dir/dev/$name"
  chmod 0660 "$dir/dev/$name"
done

install -m 0755 "$doubles/bin/npu-smi" "$dir/driver/bin/npu-smi"
echo "TEST STAND-IN: not a library; the NPU worker's preflight only checks that it is here" \
  >"$dir/driver/Ascend/driver/lib64/driver/libascend_hal.so"
printf 'Version=24.1.rc2\nascendhal_version=7.35.19\n' >"$dir/driver/Ascend/driver/version.info"
printf 'UserName=HwHiAiUser\nUserGroup=HwHiAiUser\nDriver_Install_Path_Param=/usr/local/Ascend\n' \
  >"$dir/ascend_install.info"

install -m 0755 "$doubles/bin/atc" "$dir/toolkit/latest/bin/atc"
printf 'package_name=Ascend-cann-toolkit\nversion=8.0.RC3\narch=%s\nos=linux\npath=/usr/local/Ascend/ascend-toolkit/latest\n' \
  "$arch" >"$dir/toolkit/latest/$arch-linux/ascend_toolkit_install.info"
# shellcheck disable=SC2016  # written for the container's shell to expand
printf '%s\n' \
  '# FAKE set_env.sh (docker/standin/make-fake-npu-host.sh): the toolkit holds the atc TEST DOUBLE' \
  'export ASCEND_TOOLKIT_HOME=/usr/local/Ascend/ascend-toolkit/latest' \
  'export ASCEND_HOME_PATH=${ASCEND_TOOLKIT_HOME}' \
  'export ASCEND_OPP_PATH=${ASCEND_TOOLKIT_HOME}/opp' \
  'export ASCEND_AICPU_PATH=${ASCEND_TOOLKIT_HOME}' \
  'export TOOLCHAIN_HOME=${ASCEND_TOOLKIT_HOME}/toolkit' \
  'export LD_LIBRARY_PATH=${ASCEND_TOOLKIT_HOME}/lib64:${ASCEND_TOOLKIT_HOME}/lib64/plugin/opskernel:${LD_LIBRARY_PATH}' \
  'export PYTHONPATH=${ASCEND_TOOLKIT_HOME}/python/site-packages:${PYTHONPATH}' \
  'export PATH=${ASCEND_TOOLKIT_HOME}/bin:${ASCEND_TOOLKIT_HOME}/compiler/ccec_compiler/bin:${PATH}' \
  >"$dir/toolkit/set_env.sh"

src=$dir/ais_bench-src
mkdir -p "$src/backend/aclruntime"
cp -r "$doubles/ais_bench" "$src/ais_bench"
find "$src" -name __pycache__ -prune -exec rm -rf {} +
cat >"$src/setup.py" <<'EOF'
# TEST STAND-IN for the ais_bench source: packages the project's ais_bench DOUBLE (tests/doubles/ais_bench).
from setuptools import setup

setup(name="ais_bench", version="0.0.2", packages=["ais_bench"])
EOF
cat >"$src/backend/setup.py" <<'EOF'
# TEST STAND-IN for ais_bench's backend/ (the aclruntime C++ extension): an empty package of the same name.
from setuptools import setup

setup(name="aclruntime", version="0.0.2", packages=["aclruntime"])
EOF
echo '"""TEST STAND-IN for aclruntime (no ACL here)."""' >"$src/backend/aclruntime/__init__.py"
chmod -R a+rX "$dir"
echo "fake NPU host with $chips chip(s), device group $gid, at $dir" >&2
