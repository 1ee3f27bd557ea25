#!/bin/sh
# Debian packages the tests use: chromium (Playwright drives it), a Japanese font (so
# screenshots of Japanese pages are readable, and the OCR test can draw Japanese),
# docker-compose v1 (validates compose.yaml offline) and tesseract with its Japanese
# data (OCR of scanned PDFs, optional in the product), strace (the zero-egress test
# records every connect()), and acl (setfacl/getfacl: the file-system permission tests
# set POSIX ACLs and compare what Taimatsu reads with getfacl), nginx (the site
# crawler's tests serve a small documentation tree with it) and dovecot-imapd (the
# mailbox tests start an IMAP server). Installed when missing
# and we are root; otherwise the tests that need them say they are skipped and why.
set -eu
missing=""
command -v chromium >/dev/null 2>&1 || missing="$missing chromium"
command -v docker-compose >/dev/null 2>&1 || missing="$missing docker-compose"
[ -e /usr/share/fonts/opentype/ipafont-gothic ] || missing="$missing fonts-ipafont-gothic"
command -v tesseract >/dev/null 2>&1 || missing="$missing tesseract-ocr"
command -v strace >/dev/null 2>&1 || missing="$missing strace"
command -v setfacl >/dev/null 2>&1 || missing="$missing acl"
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || missing="$missing nginx-light"
command -v dovecot >/dev/null 2>&1 || [ -x /usr/sbin/dovecot ] || missing="$missing dovecot-imapd"
[ -e /usr/share/tesseract-ocr/5/tessdata/jpn.traineddata ] || missing="$missing tesseract-ocr-jpn"
[ -z "$missing" ] && exit 0
if [ "$(id -u)" -ne 0 ]; then
    echo "sysdeps: missing$missing; install with: sudo apt-get install$missing" >&2
    exit 0
fi
echo "sysdeps: installing$missing"
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing >/dev/null
