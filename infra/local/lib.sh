# shellcheck shell=bash
# Helpers shared by infra/local/run and infra/local/test. Source it; it only defines functions.
#
# Every server started here belongs to one state directory and is stopped through it (pg_ctl -D,
# a pidfile), never by process name: another PostgreSQL or Redis on the machine is not ours to touch.

kurz_log() { printf 'kurz: %s\n' "$*" >&2; }
kurz_die() {
    printf 'kurz: error: %s\n' "$*" >&2
    exit 1
}

# --- Dependencies ------------------------------------------------------------------------------

# Installs PostgreSQL, Redis and curl, but only the ones that are missing, so a machine that has
# them never needs root or the network. The packages must not start system services: we run our
# own servers on our own ports, and a system cluster on 5432 would only confuse people.
# Extra arguments are COMMAND:PACKAGE pairs a script needs on top (e.g. nginx:nginx-light).
kurz_install_deps() {
    local -a missing=()
    compgen -G '/usr/lib/postgresql/*/bin/postgres' >/dev/null || missing+=(postgresql)
    command -v redis-server >/dev/null || missing+=(redis-server)
    command -v curl >/dev/null || missing+=(curl)
    local pair
    for pair in "$@"; do
        command -v "${pair%%:*}" >/dev/null || missing+=("${pair#*:}")
    done
    ((${#missing[@]} > 0)) || return 0

    command -v apt-get >/dev/null ||
        kurz_die "missing ${missing[*]} and no apt-get here; install them with your package manager"
    local -a sudo=()
    if ((EUID != 0)); then
        command -v sudo >/dev/null ||
            kurz_die "missing ${missing[*]}; installing them needs root, and sudo is not available"
        sudo=(sudo)
    fi
    kurz_log "installing ${missing[*]} with apt-get"
    kurz__apt_install "${sudo[@]}" -- "${missing[@]}"
}

# Python 3 with a working venv module (Debian ships ensurepip, which venv needs, in python3-venv),
# for the project-local virtualenvs of Python tools such as schemathesis. Prints the python3 to use.
kurz_install_python_venv() {
    local python=/usr/bin/python3
    if [[ ! -x $python ]] || ! "$python" -c 'import ensurepip, venv' 2>/dev/null; then
        command -v apt-get >/dev/null ||
            kurz_die "need python3 with the venv module and no apt-get here; install python3 and python3-venv"
        local -a sudo=()
        ((EUID == 0)) || sudo=(sudo)
        kurz_log "installing python3 and python3-venv with apt-get"
        kurz__apt_install "${sudo[@]}" -- python3 python3-venv >&2
    fi
    printf '%s\n' "$python"
}

# A subshell (the parentheses), so its traps cannot replace the ones of the script that sourced us.
# Arguments: the sudo prefix (possibly empty), --, then the packages.
kurz__apt_install() (
    local -a sudo=()
    while [[ $1 != -- ]]; do sudo+=("$1") && shift; done
    shift

    # invoke-rc.d asks policy-rc.d whether it may start a service; 101 means "no". We only add one
    # when none exists, because an existing one is the machine owner's choice, and we remove ours
    # even when interrupted so later installs on this machine behave normally.
    local policy=/usr/sbin/policy-rc.d
    if [[ ! -e $policy ]]; then
        trap '"${sudo[@]}" rm -f "$policy"' EXIT
        trap 'exit 130' INT
        trap 'exit 143' TERM
        printf '#!/bin/sh\nexit 101\n' | "${sudo[@]}" tee "$policy" >/dev/null
        "${sudo[@]}" chmod 0755 "$policy"
    fi

    # postgresql-common creates and starts a "main" cluster on 5432 unless createcluster.conf says
    # otherwise. Its postinst merges that file with ucf, which keeps a file that already exists
    # (UCF_FORCE_CONFFOLD makes that explicit), so a one-line file is enough, and it stays.
    local cc=/etc/postgresql-common/createcluster.conf
    if [[ ! -e $cc ]]; then
        "${sudo[@]}" mkdir -p "${cc%/*}"
        printf 'create_main_cluster = false\n' | "${sudo[@]}" tee "$cc" >/dev/null
    fi

    local -a apt_env=(env DEBIAN_FRONTEND=noninteractive UCF_FORCE_CONFFOLD=1)
    "${sudo[@]}" "${apt_env[@]}" apt-get update -q
    "${sudo[@]}" "${apt_env[@]}" apt-get install -y -q --no-install-recommends "$@"
)

# Prints the bin directory of the newest installed PostgreSQL. Debian puts the server binaries
# (initdb, postgres, pg_ctl) outside PATH, under /usr/lib/postgresql/<major>/bin.
kurz_pg_bindir() {
    local newest
    newest=$(compgen -G '/usr/lib/postgresql/*/bin/postgres' | sort -V | tail -n 1) || true
    if [[ -n $newest ]]; then
        printf '%s\n' "${newest%/postgres}"
        return 0
    fi
    # Elsewhere pg_ctl may be on PATH, often as a symlink: follow it, because initdb and postgres
    # sit next to the real file, not next to the link.
    local pg_ctl
    pg_ctl=$(command -v pg_ctl) || {
        kurz_log "no PostgreSQL server found (no /usr/lib/postgresql/*/bin, no pg_ctl on PATH)"
        return 1
    }
    pg_ctl=$(readlink -f "$pg_ctl")
    printf '%s\n' "${pg_ctl%/*}"
}

# Prints the bin directory or stops the script: for callers that cannot go on without it.
kurz__pg_bindir_or_die() {
    local dir
    dir=$(kurz_pg_bindir) || kurz_die "PostgreSQL is not installed; run kurz_install_deps first"
    printf '%s\n' "$dir"
}

# --- Services ----------------------------------------------------------------------------------

# TERM to all services at once, so their graceful shutdowns overlap; KILL whoever is left after
# 10 s, since a service that ignores TERM must not keep the stack from stopping. The argument
# names an associative array of service name -> pid (the caller's), emptied as they stop.
kurz_stop_services() {
    local -n services=$1
    ((${#services[@]} > 0)) || return 0
    kurz_log "stopping services"
    local name pid deadline=$((SECONDS + 10))
    for pid in "${services[@]}"; do kill -TERM "$pid" 2>/dev/null; done
    for name in "${!services[@]}"; do
        pid=${services[$name]}
        while kill -0 "$pid" 2>/dev/null && ((SECONDS < deadline)); do sleep 0.1; done
        if kill -0 "$pid" 2>/dev/null; then
            kurz_log "$name did not stop within 10 s of TERM; killing it"
            kill -KILL "$pid" 2>/dev/null
        fi
        wait "$pid" 2>/dev/null
        unset 'services[$name]'
    done
}

# Prints the end of the log LOGDIR/NAME.log, where the reason a service stopped usually is.
kurz_show_log_tail() {
    local logdir=$1 name=$2
    kurz_log "last lines of $logdir/$name.log:"
    tail -n 40 "$logdir/$name.log" | sed 's/^/    /' >&2
}

# Runs a one-shot step NAME (migrations, a refill) with its output in LOGDIR/NAME.log, shown on
# failure: kurz_run_step LOGDIR NAME COMMAND...
kurz_run_step() {
    local logdir=$1 name=$2
    shift 2
    kurz_log "running $name"
    "$@" </dev/null >"$logdir/$name.log" 2>&1 || {
        kurz_show_log_tail "$logdir" "$name"
        kurz_die "$name failed"
    }
}

# Starts a long-running service in the background: kurz_start_service PIDS LOGDIR NAME COMMAND...
# PIDS names the caller's associative array (name -> pid) that kurz_stop_services stops. Each
# start truncates LOGDIR/NAME.log, so what you read belongs to this run. stdin is /dev/null: CI
# starts us with stdin closed.
kurz_start_service() {
    local -n into=$1
    local logdir=$2 name=$3
    shift 3
    "$@" </dev/null >"$logdir/$name.log" 2>&1 &
    # shellcheck disable=SC2004,SC2034 # a nameref to the caller's associative array
    into[$name]=$!
}

# Waits up to 60 s for http://127.0.0.1:PORT/readyz of the service NAME that kurz_start_service
# started, or stops the script with the end of its log: kurz_wait_ready PIDS LOGDIR NAME PORT.
kurz_wait_ready() {
    local -n started=$1
    local logdir=$2 name=$3 port=$4 status=0
    kurz_wait_http "http://127.0.0.1:$port/readyz" 60 "${started[$name]}" || status=$?
    case $status in
    0) return 0 ;;
    2)
        kurz_show_log_tail "$logdir" "$name"
        kurz_die "$name exited during start-up"
        ;;
    *)
        kurz_show_log_tail "$logdir" "$name"
        kurz_die "$name was not ready on port $port within 60 s"
        ;;
    esac
}

# Prints a new API key for ACCOUNT (created if missing), made by BIN/kurz-keypool with the
# environment's KURZ_DATABASE_URL: kurz_mint_api_key BIN LOGDIR ACCOUNT api-keys-create-args...
# (--name, --scope, --rate-limit, --replace). Notes go to LOGDIR/keypool-admin.log.
kurz_mint_api_key() {
    local bin=$1 logdir=$2 account=$3
    shift 3
    local log=$logdir/keypool-admin.log
    "$bin/kurz-keypool" accounts create "$account" --exists-ok </dev/null >/dev/null 2>>"$log" ||
        kurz_die "creating the account $account failed (see $log)"
    "$bin/kurz-keypool" api-keys create --account "$account" "$@" </dev/null 2>>"$log" ||
        kurz_die "making an API key for $account failed (see $log)"
}

# --- Ports -------------------------------------------------------------------------------------

# Fails with a clear message when PORT already has a listener. Callers check before starting
# something of their own, so a listener there is someone else's and we must not take it over.
kurz_require_free_port() {
    local port=$1 what=$2 owner=''
    if command -v ss >/dev/null; then
        # Any listener counts, not only one on 127.0.0.1: a server on 0.0.0.0 also takes our port.
        [[ -z $(ss -Hltn "sport = :$port") ]] && return 0
        # -p names the process when we may see it (root, or our own user); without it we still
        # know the port is taken.
        owner=$(ss -Hltnp "sport = :$port" | grep -o 'users:.*' | head -n 1) || true
    else
        # Without ss (minimal images have no iproute2), a connection that succeeds means a listener.
        (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null || return 0
    fi
    kurz_die "port $port (for $what) is already in use${owner:+ by $owner}; stop that process or pick another port (see infra/local/run for the KURZ_LOCAL_*_PORT variables)"
}

# --- PostgreSQL --------------------------------------------------------------------------------

# PostgreSQL refuses to run as root. As root (containers, CI) we run its server programs as
# "nobody", which every Debian has; as anyone else we run them directly.
kurz__as_pg_user() {
    if ((EUID == 0)); then
        # cd / first: the caller's directory may be one nobody cannot enter, and initdb complains.
        (cd / && setpriv --reuid=nobody --regid="$(id -g nobody)" --clear-groups -- "$@")
    else
        "$@"
    fi
}

# As root, hands DIR (and what is inside) to nobody, after checking nobody can reach it at all.
kurz__pg_prepare_dir() {
    local dir=$1
    # umask 022 in a subshell: parents that mkdir creates must be traversable by nobody even when
    # the user's umask is 077.
    (umask 022 && mkdir -p "$dir/data" "$dir/run")
    if ((EUID != 0)); then
        [[ -O $dir/data ]] ||
            kurz_die "$dir/data belongs to $(stat -c %U "$dir/data"), not to you; it was made by another user (or by root). Remove $dir to start afresh"
        return 0
    fi

    # Path lookup needs search (x) permission on every parent, so one 0700 directory anywhere above
    # (typically /root) makes the data directory unreachable for nobody. Name the culprit.
    local path='' part
    local -a parts
    IFS=/ read -ra parts <<<"${dir#/}"
    for part in "${parts[@]}"; do
        path+=/$part
        kurz__as_pg_user test -x "$path" ||
            kurz_die "PostgreSQL cannot run as root, so we run it as 'nobody', but nobody cannot enter $path (mode $(stat -c %a "$path")). Clone the repository under a directory everyone can traverse (for example /srv or /work), or run as a normal user"
    done

    # Only when ownership is wrong: a recursive chown of a large data dir on every start is slow.
    if [[ $(stat -c %U "$dir/data") != nobody ]]; then
        chown -R nobody:"$(id -gn nobody)" "$dir/data"
    fi
    # The log file (postgres.log) sits in $dir itself, and pg_ctl writes it as nobody.
    chown nobody:"$(id -gn nobody)" "$dir" "$dir/run"
}

# Starts (or reuses) the PostgreSQL whose state lives in DIR, on 127.0.0.1:PORT, with a superuser
# "kurz" (trust authentication: it only listens on loopback) and a database "kurz".
kurz_pg_start() {
    local dir port bindir
    dir=$(realpath -m "$1") port=$2
    bindir=$(kurz__pg_bindir_or_die)
    kurz__pg_prepare_dir "$dir"

    if kurz__as_pg_user "$bindir/pg_ctl" -D "$dir/data" status >/dev/null 2>&1; then
        # Ours is already up (say, left over from a run that was killed). Reuse it, unless it
        # listens elsewhere: line 4 of postmaster.pid is its port.
        local running_port
        running_port=$(sed -n 4p "$dir/data/postmaster.pid")
        [[ $running_port == "$port" ]] ||
            kurz_die "PostgreSQL in $dir is already running on port $running_port, not $port; stop it with: $bindir/pg_ctl -D $dir/data stop"
        kurz_log "PostgreSQL already running on port $port (reusing it)"
    else
        kurz_require_free_port "$port" PostgreSQL
        kurz__pg_initdb "$bindir" "$dir"
        kurz__pg_ctl_start "$bindir" "$dir" "$port"
    fi
    kurz__pg_ensure_database "$bindir" "$port"
}

kurz__pg_initdb() {
    local bindir=$1 dir=$2
    [[ -e $dir/data/PG_VERSION ]] && return 0
    # C.UTF-8 gives byte-order collation (stable, no dependency on system locales) with UTF-8
    # character classes. Minimal systems may lack it; plain C is the same collation, so it will do.
    local -a locale=(--locale=C.UTF-8)
    locale -a 2>/dev/null | grep -qiE '^c\.utf-?8$' || locale=(--no-locale)
    kurz_log "creating a PostgreSQL cluster in $dir/data"
    kurz__as_pg_user "$bindir/initdb" -D "$dir/data" -U kurz -A trust --encoding=UTF8 \
        "${locale[@]}" >"$dir/initdb.log" 2>&1 || {
        tail -n 20 "$dir/initdb.log" >&2
        kurz_die "initdb failed (whole log: $dir/initdb.log)"
    }
}

kurz__pg_ctl_start() {
    local bindir=$1 dir=$2 port=$3
    # The Unix socket path is limited to 107 bytes; a deep checkout would otherwise fail with a
    # message buried in the server log.
    local socket="$dir/run/.s.PGSQL.$port"
    ((${#socket} <= 107)) ||
        kurz_die "the PostgreSQL socket path $socket is longer than 107 bytes; clone the repository to a shorter path"
    # max_connections: three services with pools, plus psql, exceed the default 100 quickly.
    # The -o string goes through sh inside pg_ctl, hence the quotes around the socket directory.
    local options="-p $port -c listen_addresses=127.0.0.1 -k '$dir/run' -c max_connections=200 -c shared_buffers=256MB"
    kurz_log "starting PostgreSQL on 127.0.0.1:$port"
    kurz__as_pg_user "$bindir/pg_ctl" -D "$dir/data" -l "$dir/postgres.log" -w -t 60 \
        -o "$options" start >/dev/null || {
        tail -n 20 "$dir/postgres.log" >&2
        kurz_die "PostgreSQL did not start (whole log: $dir/postgres.log)"
    }
}

kurz__pg_ensure_database() {
    local bindir=$1 port=$2
    # psql and createdb are clients, so they may run as root; -X skips the user's ~/.psqlrc.
    local exists
    exists=$("$bindir/psql" -X -h 127.0.0.1 -p "$port" -U kurz -d postgres -tAc \
        "select 1 from pg_database where datname = 'kurz'")
    [[ $exists == 1 ]] || "$bindir/createdb" -h 127.0.0.1 -p "$port" -U kurz kurz
}

# Stops the PostgreSQL of DIR if it runs. "fast" rolls back open transactions instead of waiting
# for clients to leave: the services are stopped before this anyway.
kurz_pg_stop() {
    local dir bindir
    dir=$(realpath -m "$1")
    [[ -e $dir/data/PG_VERSION ]] || return 0
    bindir=$(kurz__pg_bindir_or_die)
    kurz__as_pg_user "$bindir/pg_ctl" -D "$dir/data" status >/dev/null 2>&1 || return 0
    kurz_log "stopping PostgreSQL"
    kurz__as_pg_user "$bindir/pg_ctl" -D "$dir/data" -m fast -w -t 60 stop >/dev/null
}

# --- Redis -------------------------------------------------------------------------------------

# Prints the pid in DIR/redis.pid when that process is alive and is a redis-server, so a stale
# pidfile whose number now belongs to something else is never acted upon.
kurz__redis_pid() {
    local pidfile=$1/redis.pid pid
    [[ -r $pidfile ]] || return 1
    read -r pid <"$pidfile" || return 1
    [[ $pid =~ ^[0-9]+$ && $(cat "/proc/$pid/comm" 2>/dev/null) == redis-server ]] || return 1
    printf '%s\n' "$pid"
}

# Starts an empty Redis whose state (pidfile, log) lives in DIR, on 127.0.0.1:PORT.
# It is a cache, so nothing is persisted ("--save ''", no AOF) and each start begins empty.
kurz_redis_start() {
    local dir port
    dir=$(realpath -m "$1") port=$2
    mkdir -p "$dir"
    # A Redis of ours still alive (from a run that was killed) holds the port and stale entries.
    if kurz__redis_pid "$dir" >/dev/null; then
        kurz_redis_stop "$dir" "$port"
    fi
    kurz_require_free_port "$port" Redis
    kurz_log "starting Redis on 127.0.0.1:$port"
    : >"$dir/redis.log"
    redis-server --bind 127.0.0.1 --port "$port" --dir "$dir" --daemonize yes \
        --pidfile "$dir/redis.pid" --logfile "$dir/redis.log" --save '' --appendonly no \
        --protected-mode yes </dev/null >/dev/null
    # --daemonize returns before the server listens (or fails to), so ask it. 100 x 0.1 s: a
    # healthy Redis answers in milliseconds; ten seconds is for a very busy machine.
    local _
    for _ in {1..100}; do
        [[ $(redis-cli -p "$port" ping 2>/dev/null) == PONG ]] && return 0
        sleep 0.1
    done
    tail -n 20 "$dir/redis.log" >&2
    kurz_die "Redis did not answer PING on port $port within 10 s (whole log: $dir/redis.log)"
}

# Stops the Redis of DIR. SHUTDOWN NOSAVE is only sent after checking that the server on PORT is
# the process of our pidfile; otherwise (or if it does not go away) the pid gets TERM, then KILL.
kurz_redis_stop() {
    local dir port pid
    dir=$(realpath -m "$1") port=$2
    pid=$(kurz__redis_pid "$dir") || {
        rm -f "$dir/redis.pid"
        return 0
    }
    kurz_log "stopping Redis"
    # INFO lines end in CRLF, hence the tr.
    if redis-cli -p "$port" info server 2>/dev/null | tr -d '\r' | grep -qx "process_id:$pid"; then
        redis-cli -p "$port" shutdown nosave >/dev/null 2>&1 || true
    else
        kill -TERM "$pid" 2>/dev/null || true
    fi
    kurz_wait_pid_gone "$pid" 10 || kill -KILL "$pid" 2>/dev/null || true
    rm -f "$dir/redis.pid"
}

# --- Processes and HTTP ------------------------------------------------------------------------

# Waits up to TIMEOUT seconds for PID to disappear. Returns 1 if it is still there.
kurz_wait_pid_gone() {
    local pid=$1 timeout=$2 _
    for _ in $(seq $((timeout * 10))); do
        kill -0 "$pid" 2>/dev/null || return 0
        sleep 0.1
    done
    ! kill -0 "$pid" 2>/dev/null
}

# Polls URL until it answers 200, for at most TIMEOUT seconds. With a third argument PID, gives up
# as soon as that process is gone: waiting a whole minute for a server that crashed helps nobody.
# Returns 0 when ready, 1 on timeout, 2 when PID died.
kurz_wait_http() {
    local url=$1 timeout=$2 pid=${3:-} code
    local deadline=$((SECONDS + timeout))
    while ((SECONDS < deadline)); do
        # --noproxy: a developer's http_proxy must not intercept loopback.
        code=$(curl -s -o /dev/null -w '%{http_code}' --noproxy '*' --max-time 2 "$url") || true
        [[ $code == 200 ]] && return 0
        if [[ -n $pid ]] && ! kill -0 "$pid" 2>/dev/null; then
            return 2
        fi
        sleep 0.25
    done
    return 1
}

# Makes cargo reachable in shells that did not source ~/.cargo/env (fresh CI shells, sudo), or
# stops with a pointer to rustup.
kurz_require_cargo() {
    if ! command -v cargo >/dev/null && [[ -x ${CARGO_HOME:-$HOME/.cargo}/bin/cargo ]]; then
        PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"
    fi
    command -v cargo >/dev/null ||
        kurz_die "cargo not found; install Rust with rustup: https://rustup.rs (then open a new shell)"
}
