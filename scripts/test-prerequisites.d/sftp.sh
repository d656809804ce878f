#!/usr/bin/env bash
# SFTP channel tests (sinks/tests/it/sftp.rs) start a real OpenSSH server: they need /usr/sbin/sshd
# and ssh-keygen. Installs them only when missing; quiet on success.
set -euo pipefail
if [ ! -x /usr/sbin/sshd ] || ! command -v ssh-keygen >/dev/null; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openssh-server >/dev/null
fi
# sshd's privilege separation directory; the tests create it too, but a fresh /run lacks it.
mkdir -p /run/sshd
