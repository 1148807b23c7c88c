#!/bin/sh
# The container image's entrypoint (deploy/Containerfile). The browserd package installs it at
# /usr/share/browserd/entrypoint.sh; the image runs it under tini (PID 1, which reaps the
# processes browsers leave behind).
#
# It runs `browserd serve` on the container's addresses with the data dir on the image's
# volume, logging JSON lines to stderr. The container's arguments are appended, so
#   podman run ... browserd --max-sessions 8 --egress-allow 10.20.0.0/16
# adds serve flags. Do not repeat --listen, --data-dir or --metrics-listen: they are set here,
# and browserd refuses a flag given twice.
#
# Secrets come from the environment only (BROWSERD_API_KEY, BROWSERD_CONTEXT_KEY,
# BROWSERD_DATABASE), never from flags: a flag's value shows in `ps`, in `podman inspect`
# and in a Kubernetes pod spec. This script refuses --api-key, --context-key and --database.
# (--api-key-file, a path, is fine.)
#
# BROWSERD_ENTRYPOINT_DRY_RUN=1 prints the command, one line, each argument shell-quoted
# when it needs it, instead of running it (deploy/check.py uses it).
set -eu

for arg in "$@"; do
    case $arg in
        --api-key | --api-key=* | --context-key | --context-key=* | --database | --database=*)
            echo "entrypoint: refusing ${arg%%=*} on the command line, where ps and the container's configuration show it: set BROWSERD_API_KEY, BROWSERD_CONTEXT_KEY or BROWSERD_DATABASE in the environment instead" >&2
            exit 64
            ;;
    esac
done

set -- /usr/bin/browserd --log-format json serve \
    --listen 0.0.0.0:3000 \
    --data-dir /var/lib/browserd \
    --metrics-listen 0.0.0.0:9300 \
    "$@"

if [ "${BROWSERD_ENTRYPOINT_DRY_RUN:-}" = 1 ]; then
    sep=
    for arg in "$@"; do
        case $arg in
            '' | *[!A-Za-z0-9_./:=@%+,-]*)
                arg="'$(printf '%s' "$arg" | sed "s/'/'\\\\''/g")'"
                ;;
        esac
        printf '%s%s' "$sep" "$arg"
        sep=' '
    done
    printf '\n'
    exit 0
fi

exec "$@"
