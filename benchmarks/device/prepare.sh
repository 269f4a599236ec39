#!/usr/bin/env bash
# Run HERE (a machine with the checkout, the data and pip) before a device call: fills the
# git-ignored .device/ and .whl/ that the call carries.
#   bash benchmarks/device/prepare.sh [CIFAR10_IMAGE_FOLDER]
#   .device/git_commit   this checkout's commit: records written there carry it (BENCH_GIT_COMMIT)
#   .device/cifar10.pack CIFAR-10's JPEG tree in one file (~55 MB; pack.py)
#   .whl/                wheels of wandb's sweep engine and its needs, absent from the GPU image
#                        (`bench grid` expands a sweep with it); a few MB
set -eu
SRC=${1:-../shared/data/cifar10-jpeg}
mkdir -p .device
git rev-parse HEAD > .device/git_commit
git diff --quiet HEAD || echo "warning: uncommitted changes; records will name $(cat .device/git_commit)" >&2
[ -f .device/cifar10.pack ] || python benchmarks/device/pack.py pack "$SRC" .device/cifar10.pack
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo /.whl/ >> .git/info/exclude
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux_2_28_x86_64 \
  -d .whl sweeps==0.2.0 jsonref==1.1.0 jsonschema==4.26.0 jsonschema-specifications==2025.9.1 \
  referencing==0.37.0 rpds-py==2026.9.1 pydantic==2.14.4 pydantic-core==2.50.5 \
  annotated-types==0.8.0 typing-inspection==0.4.5
du -sh .device .whl
