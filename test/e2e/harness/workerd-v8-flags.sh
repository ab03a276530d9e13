#!/bin/sh
# workerd with V8 flags (SKIFF_WORKERD_V8_FLAGS, a JSON array) added to the config Miniflare sends on
# stdin; Miniflare runs this as its workerd (MINIFLARE_WORKERD_PATH), the real one is SKIFF_WORKERD.
# exec: workerd takes this process's place, so Miniflare's signals and the control pipe reach it.
set -e
config=$(mktemp)
node "$(dirname "$0")/workerd-v8-flags.mjs" "$SKIFF_WORKERD_V8_FLAGS" >"$config"
exec <"$config"
rm -f "$config"
exec "$SKIFF_WORKERD" "$@"
