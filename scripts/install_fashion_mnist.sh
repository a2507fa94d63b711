#!/usr/bin/env bash
# Installs Debian's dataset-fashion-mnist (the real Fashion-MNIST IDX files).
set -euo pipefail
if [ -d /usr/share/datasets/fashion-mnist ]; then exit 0; fi
SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi
$SUDO apt-get update -q
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q dataset-fashion-mnist
