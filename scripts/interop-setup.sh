#!/usr/bin/env bash
# Installs the third-party servers the interop tests talk to into a virtualenv:
# scim2-server (a SCIM 2.0 service provider nobody here wrote), aiosmtpd (an SMTP
# server) and trustme (a throwaway CA for the STARTTLS/SMTPS tests; no openssl needed).
# Idempotent: a venv that already has the pinned versions is left alone.
#
#   scripts/interop-setup.sh          # venv at ${SEATWARDEN_INTEROP_DIR:-.interop}/venv
set -euo pipefail

SCIM2_SERVER_VERSION=0.8.3
SCIM2_MODELS_VERSION=0.12.3
AIOSMTPD_VERSION=1.4.6
TRUSTME_VERSION=1.2.1

dir="${SEATWARDEN_INTEROP_DIR:-.interop}"
venv="$dir/venv"
python="${PYTHON:-python3}"

mkdir -p "$dir"
if [ ! -x "$venv/bin/python" ]; then
    "$python" -m venv "$venv"
fi

wanted=("scim2-server==$SCIM2_SERVER_VERSION" "scim2-models==$SCIM2_MODELS_VERSION" "aiosmtpd==$AIOSMTPD_VERSION" "trustme==$TRUSTME_VERSION")
installed="$("$venv/bin/python" -m pip freeze 2>/dev/null || true)"
missing=0
for req in "${wanted[@]}"; do
    grep -qix "$req" <<<"$installed" || missing=1
done
if [ "$missing" = 1 ]; then
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check "${wanted[@]}"
fi
"$venv/bin/scim2-server" --help >/dev/null
echo "interop venv ready: $venv (scim2-server $SCIM2_SERVER_VERSION, aiosmtpd $AIOSMTPD_VERSION, trustme $TRUSTME_VERSION)"
