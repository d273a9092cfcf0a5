#!/bin/sh
# install-config.sh FILE - meson install script: install the example
# configuration (bridge.yaml beside this script) as FILE under $DESTDIR, on a
# first install only. An operator's edited file is never overwritten by a
# later `meson install` (meson's own install_data would replace it silently).
set -eu
example="$(dirname "$0")/bridge.yaml"
target="${DESTDIR:-}$1"
install -d -m 0755 "$(dirname "$target")"
if [ -e "$target" ]; then
    echo "Keeping existing $target (example: $example)"
else
    echo "Installing $example to $target"
    install -m 0644 "$example" "$target"
fi
