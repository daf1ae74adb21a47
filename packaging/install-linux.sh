#!/usr/bin/env bash
# Add BiT Studio to this user's application menu (Linux desktops following freedesktop.org), or remove it.
#
#   packaging/install-linux.sh [PROGRAM]     install; PROGRAM is the bit-studio executable to start
#   packaging/install-linux.sh --uninstall   remove what an install added
#
# PROGRAM defaults to the bundle built by packaging/build.py (dist/bit-studio/bit-studio) when there is one,
# else to the `bit-studio` found on PATH (a virtual environment's, say). Nothing needs root: the desktop
# entry, the icons and the AppStream metainfo go under ${XDG_DATA_HOME:-~/.local/share}.
set -euo pipefail

APP_ID=io.github.bitstudio.BitStudio
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(dirname "$HERE")"
DATA_HOME="${XDG_DATA_HOME:-$HOME/.local/share}"
ICON_SIZES=(16 32 48 64 128 256 512)

installed_files() {
    echo "$DATA_HOME/applications/$APP_ID.desktop"
    echo "$DATA_HOME/metainfo/$APP_ID.metainfo.xml"
    echo "$DATA_HOME/icons/hicolor/scalable/apps/$APP_ID.svg"
    for size in "${ICON_SIZES[@]}"; do
        echo "$DATA_HOME/icons/hicolor/${size}x${size}/apps/$APP_ID.png"
    done
}

refresh_caches() {
    # Menus notice new entries by themselves on most desktops; these make it immediate where they exist.
    if command -v update-desktop-database >/dev/null; then
        update-desktop-database -q "$DATA_HOME/applications" || true
    fi
    if command -v gtk-update-icon-cache >/dev/null && [ -f "$DATA_HOME/icons/hicolor/index.theme" ]; then
        gtk-update-icon-cache -q -t "$DATA_HOME/icons/hicolor" || true
    fi
}

if [ "${1:-}" = "--uninstall" ]; then
    while read -r file; do rm -f "$file"; done < <(installed_files)
    refresh_caches
    echo "Removed BiT Studio from the application menu (files under $DATA_HOME)."
    exit 0
fi
if [ "${1:-}" = "-h" ] || [ "${1:-}" = "--help" ]; then
    sed -n '2,9p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
    exit 0
fi

program="${1:-}"
if [ -z "$program" ]; then
    if [ -x "$ROOT/dist/bit-studio/bit-studio" ]; then
        program="$ROOT/dist/bit-studio/bit-studio"
    elif command -v bit-studio >/dev/null; then
        program="$(command -v bit-studio)"
    else
        echo "No bit-studio program found: build the bundle (python packaging/build.py), or install the" >&2
        echo "package (pip install .), or name the program: $0 /path/to/bit-studio" >&2
        exit 1
    fi
fi
if [ ! -x "$program" ] || [ -d "$program" ]; then
    echo "$program is not an executable program." >&2
    exit 1
fi
program="$(cd "$(dirname "$program")" && pwd)/$(basename "$program")"
case "$program" in
    *[\"\`\$\\]*)
        echo "The path $program holds a quote, backquote, dollar or backslash, which a desktop entry" >&2
        echo "cannot start reliably; move the program to a plainer path." >&2
        exit 1 ;;
esac
# The desktop entry spec: an Exec argument with spaces is double-quoted; TryExec is a plain string.
exec_arg="$program"
case "$program" in *" "*) exec_arg="\"$program\"" ;; esac

mkdir -p "$DATA_HOME/applications" "$DATA_HOME/metainfo" "$DATA_HOME/icons/hicolor/scalable/apps"
sed -e "s|^Exec=.*|Exec=$exec_arg|" -e "s|^TryExec=.*|TryExec=$program|" \
    -e "/^# install-linux.sh replaces/d" \
    "$HERE/linux/$APP_ID.desktop" > "$DATA_HOME/applications/$APP_ID.desktop"
cp "$HERE/linux/$APP_ID.metainfo.xml" "$DATA_HOME/metainfo/$APP_ID.metainfo.xml"
cp "$ROOT/resources/bit-studio.svg" "$DATA_HOME/icons/hicolor/scalable/apps/$APP_ID.svg"
for size in "${ICON_SIZES[@]}"; do
    mkdir -p "$DATA_HOME/icons/hicolor/${size}x${size}/apps"
    cp "$ROOT/resources/icons/bit-studio-$size.png" "$DATA_HOME/icons/hicolor/${size}x${size}/apps/$APP_ID.png"
done
refresh_caches
echo "BiT Studio is in the application menu; it starts $program"
echo "(remove it with: $0 --uninstall)"
