# Helpers shared by scripts/test and scripts/demo. Source it; do not run it.
# shellcheck shell=bash

log() { printf '\n==> %s\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

# Runs a command as root: directly when we are root, through sudo otherwise.
as_root() {
    if [[ $(id -u) -eq 0 ]]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo "$@"
    else
        die "need root to run '$*' (install PostgreSQL 15+ and Redis 7+ yourself, or run as root)"
    fi
}

postgres_installed() {
    local dir major
    for dir in /usr/lib/postgresql/*/bin; do
        major=$(basename "$(dirname "$dir")")
        [[ $major =~ ^[0-9]+$ ]] && ((major >= 15)) && [[ -x $dir/initdb && -x $dir/pg_ctl ]] && return 0
    done
    command -v initdb >/dev/null 2>&1 && command -v pg_ctl >/dev/null 2>&1
}

redis_installed() {
    command -v redis-server >/dev/null 2>&1 || [[ -x /usr/bin/redis-server ]]
}

# redis-cli (Debian's redis-tools) creates the test Redis Cluster (neo-testkit).
redis_cli_installed() {
    command -v redis-cli >/dev/null 2>&1 || [[ -x /usr/bin/redis-cli ]]
}

# redis-sentinel (Debian's redis-sentinel) runs the test Sentinel group (neo-testkit).
redis_sentinel_installed() {
    command -v redis-sentinel >/dev/null 2>&1 || [[ -x /usr/bin/redis-sentinel ]]
}

# promtool (Debian's `prometheus` package) checks and unit-tests deploy/prometheus/alerts.yml.
promtool_installed() {
    command -v promtool >/dev/null 2>&1 || [[ -x /usr/bin/promtool ]]
}

# Headless Chromium and its WebDriver (Debian's chromium and chromium-driver) drive
# neo-console's browser tests.
chromium_installed() {
    command -v chromium >/dev/null 2>&1 || [[ -x /usr/bin/chromium ]]
}

chromedriver_installed() {
    command -v chromedriver >/dev/null 2>&1 || [[ -x /usr/bin/chromedriver ]]
}

# PgBouncer (Debian's pgbouncer) sits in front of the test PostgreSQL (neo-testkit).
pgbouncer_installed() {
    command -v pgbouncer >/dev/null 2>&1 || [[ -x /usr/sbin/pgbouncer ]]
}

# Installs PostgreSQL, PgBouncer, Redis, redis-cli, redis-sentinel, promtool, chromium and
# chromedriver (neo-console's browser tests) from Debian's packages
# when any is missing.
ensure_servers_installed() {
    local packages=()
    postgres_installed || packages+=(postgresql)
    pgbouncer_installed || packages+=(pgbouncer)
    redis_installed || packages+=(redis-server)
    redis_cli_installed || packages+=(redis-tools)
    redis_sentinel_installed || packages+=(redis-sentinel)
    promtool_installed || packages+=(prometheus)
    chromium_installed || packages+=(chromium)
    chromedriver_installed || packages+=(chromium-driver)
    if ((${#packages[@]} == 0)); then
        log "PostgreSQL, PgBouncer, Redis, redis-cli, redis-sentinel, promtool, chromium and chromedriver are installed"
        return
    fi
    command -v apt-get >/dev/null 2>&1 ||
        die "missing ${packages[*]} and no apt-get here: install PostgreSQL 15+ and Redis 7+ yourself"
    log "installing ${packages[*]} from Debian's packages"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -q
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${packages[@]}"
    postgres_installed || die "PostgreSQL 15+ is still missing after installing it"
    pgbouncer_installed || die "PgBouncer is still missing after installing it"
    redis_installed || die "Redis is still missing after installing it"
    redis_cli_installed || die "redis-cli (redis-tools) is still missing after installing it"
    redis_sentinel_installed || die "redis-sentinel is still missing after installing it"
    promtool_installed || die "promtool (package prometheus) is still missing after installing it"
    chromium_installed || die "chromium is still missing after installing it"
    chromedriver_installed || die "chromedriver (package chromium-driver) is still missing after installing it"
}

# Installs cargo-deny when missing (compiled from crates.io: a few minutes the first time).
ensure_cargo_deny() {
    if ! cargo deny --version >/dev/null 2>&1; then
        log "installing cargo-deny (first run only)"
        cargo install --locked cargo-deny@0.20.2
    fi
}

# Checks the build's crates against the RustSec advisory database (`[advisories]` in deny.toml,
# or the config named by $1). When the database can be fetched, any advisory for a crate in the
# build fails (returns non-zero). When it cannot (no route to its git host), nothing is checked:
# WARNING lines say so, with the fetch error, and it returns 0 so the rest of the suite runs.
check_advisories() {
    local config=${1:-deny.toml} fetch_log
    fetch_log=$(mktemp)
    if ! cargo deny --config "$config" fetch db >"$fetch_log" 2>&1; then
        {
            printf '\nWARNING: ********************************************************************\n'
            printf 'WARNING: advisories NOT checked: the advisory database could not be fetched.\n'
            grep -E 'ERROR|fatal' "$fetch_log" | sed 's/^/WARNING:   /' || true
            printf 'WARNING: run `cargo deny check advisories` on a machine that reaches it.\n'
            printf 'WARNING: ********************************************************************\n'
        } >&2
        rm -f "$fetch_log"
        return 0
    fi
    rm -f "$fetch_log"
    cargo deny --all-features --config "$config" check advisories
}

# Starts one PostgreSQL and one Redis for this run (unless NEO_TEST_DATABASE_URL and
# NEO_TEST_REDIS_URL are already set) and exports their URLs. Stopped when the script exits.
# Arguments go to neo-test-servers: `--redis-cluster` and `--redis-tls` start a Redis Cluster
# and a TLS-only Redis for the run too (NEO_TEST_REDIS_CLUSTER_NODES, NEO_TEST_REDIS_TLS_*),
# `--redis-sentinel` a Sentinel group (NEO_TEST_REDIS_SENTINEL_NODES, _MASTER) and
# `--pgbouncer` PgBouncer in transaction mode in front of the PostgreSQL (NEO_TEST_PGBOUNCER_URL).
start_test_servers() {
    if [[ -n ${NEO_TEST_DATABASE_URL:-} && -n ${NEO_TEST_REDIS_URL:-} ]]; then
        log "using NEO_TEST_DATABASE_URL and NEO_TEST_REDIS_URL from the environment"
        return
    fi
    cargo build --locked -q -p neo-testkit --bin neo-test-servers
    local state_dir
    state_dir=$(mktemp -d)
    "${CARGO_TARGET_DIR:-target}/debug/neo-test-servers" --env-file "$state_dir/servers.env" \
        --parent-pid $$ "$@" >"$state_dir/servers.log" 2>&1 &
    NEO_SERVERS_PID=$!
    NEO_SERVERS_DIR=$state_dir
    trap stop_test_servers EXIT
    local waited=0
    until [[ -f $state_dir/servers.env ]]; do
        if ! kill -0 "$NEO_SERVERS_PID" 2>/dev/null; then
            cat "$state_dir/servers.log" >&2
            die "the test servers did not start (see above)"
        fi
        ((waited++ < 600)) || die "the test servers did not start within 60 s"
        sleep 0.1
    done
    set -a
    # shellcheck disable=SC1091
    source "$state_dir/servers.env"
    set +a
    log "PostgreSQL at $NEO_TEST_DATABASE_URL, Redis at $NEO_TEST_REDIS_URL"
}

stop_test_servers() {
    if [[ -n ${NEO_SERVERS_PID:-} ]]; then
        kill "$NEO_SERVERS_PID" 2>/dev/null || true
        wait "$NEO_SERVERS_PID" 2>/dev/null || true
        rm -rf "$NEO_SERVERS_DIR"
        NEO_SERVERS_PID=
    fi
}

# `cargo package` for every library crate (crates/*), in dependency order: cargo packages the
# workspace's crates into a local registry overlay, so each one's verification build finds its
# unpublished neo-* dependencies there (cargo >= 1.89). Offline: the crates.io dependencies come
# from the local cache the build steps filled (`cargo fetch` first when the network is there).
# The verification builds use the workspace's dev profile so they reuse its compiled dependencies.
package_crates() {
    local packages=() manifest name
    for manifest in crates/*/Cargo.toml; do
        name=$(sed -n 's/^name = "\(.*\)"$/\1/p' "$manifest" | head -n1)
        packages+=(-p "$name")
        # cargo unpacks each packaged crate into $CARGO_HOME/registry/src/-<hash of the
        # temporary registry's path>/ to verify its dependents, and reuses a copy already
        # unpacked there for the same version: a later run would verify against the sources
        # of an earlier one. Drop those copies (only the temporary registries' dirs start
        # with '-'; crates.io's is untouched).
        rm -rf "${CARGO_HOME:-$HOME/.cargo}"/registry/src/-*/"$name"-[0-9]*
    done
    # Its builds of those registry copies are fingerprinted as immutable registry code (no
    # source files listed): drop them too, or an unchanged version is never rebuilt.
    find "${CARGO_TARGET_DIR:-target}"/debug/.fingerprint -path '*/neo-*/dep-lib-*' -size -20c \
        -exec dirname {} + 2>/dev/null | xargs -r rm -rf
    cargo fetch --locked -q 2>/dev/null || log "cargo fetch failed: packaging from the local cache"
    cargo package --locked --offline --allow-dirty "${packages[@]}" \
        --config 'profile.dev.debug="line-tables-only"' \
        --config 'profile.dev.incremental=false' \
        --config 'profile.dev.package."*".opt-level=1' \
        --config 'profile.dev.package."*".debug=false'
}
