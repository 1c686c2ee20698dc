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

# Servers (PostgreSQL, Redis) are started, checked and stopped by the kurz-servers binary
# (shared/servers), the code the tests start theirs with, so a fix to how a server starts lands
# once. Each runs in the foreground of its own kurz-servers process, in a session of its own
# (a Ctrl-C meant for the services does not stop the database under them), with its state in
# DIR: DIR/kurz-servers.pid, DIR/kurz-servers.log, and DIR/ready while it serves. The caller
# must have built the binaries and set BIN to their directory.

# Prints the pid in PIDFILE when that process is alive and its name is COMM, so a stale
# pidfile whose number now belongs to something else is never acted upon.
kurz__live_pid() {
    local pidfile=$1 comm=$2 pid
    [[ -r $pidfile ]] || return 1
    read -r pid <"$pidfile" || return 1
    [[ $pid =~ ^[0-9]+$ && $(cat "/proc/$pid/comm" 2>/dev/null) == "$comm" ]] || return 1
    printf '%s\n' "$pid"
}

kurz__server_pid() { kurz__live_pid "$1/kurz-servers.pid" kurz-servers; }

# kurz__server_start KIND DIR PORT [ARGS...]: starts `kurz-servers KIND` and waits until it is
# ready (10 minutes at most: a first initdb on a slow disk, a long crash recovery), or dies
# with the end of its log.
kurz__server_start() {
    local kind=$1 dir port=$3 bin=${BIN:?BIN must name the directory of the built binaries}
    dir=$(realpath -m "$2")
    shift 3
    [[ -x $bin/kurz-servers ]] || kurz_die "$bin/kurz-servers is missing; build the binaries first"
    mkdir -p "$dir"
    # One of ours still alive (from a run that was killed) holds the port and the data.
    kurz__server_stop "$kind" "$dir"
    kurz_require_free_port "$port" "$kind"
    kurz_log "starting $kind on 127.0.0.1:$port"
    rm -f "$dir/ready"
    "$bin/kurz-servers" "$kind" --dir "$dir" --port "$port" "$@" \
        </dev/null >>"$dir/kurz-servers.log" 2>&1 &
    local pid=$! _
    printf '%s\n' "$pid" >"$dir/kurz-servers.pid"
    for _ in $(seq 6000); do
        [[ -e $dir/ready ]] && return 0
        if ! kill -0 "$pid" 2>/dev/null; then
            tail -n 20 "$dir/kurz-servers.log" >&2
            kurz_die "$kind did not start (whole log: $dir/kurz-servers.log)"
        fi
        sleep 0.1
    done
    kurz_die "$kind was not ready within 10 minutes (log: $dir/kurz-servers.log)"
}

# kurz__server_stop KIND DIR: SIGTERM to the kurz-servers of DIR (which stops its server: a
# fast shutdown for PostgreSQL), SIGKILL after 90 s.
kurz__server_stop() {
    local kind=$1 dir pid
    dir=$(realpath -m "$2")
    pid=$(kurz__server_pid "$dir") || {
        rm -f "$dir/kurz-servers.pid"
        return 0
    }
    kurz_log "stopping $kind"
    kill -TERM "$pid" 2>/dev/null || true
    kurz_wait_pid_gone "$pid" 90 || kill -KILL "$pid" 2>/dev/null || true
    rm -f "$dir/kurz-servers.pid"
}

# Starts the PostgreSQL whose state lives in DIR (cluster in DIR/data, made on first use), on
# 127.0.0.1:PORT, with a superuser "kurz" (trust authentication: it only listens on loopback)
# and a database "kurz".
kurz_pg_start() {
    # The same PostgreSQL build as the tests: the newest installed, unless one is named.
    KURZ_TEST_PG_BINDIR=${KURZ_TEST_PG_BINDIR:-$(kurz__pg_bindir_or_die)} \
        kurz__server_start postgres "$1" "$2" --database kurz
}

kurz_pg_stop() { kurz__server_stop postgres "$1"; }

# Starts an empty Redis whose state (pidfile, log) lives in DIR, on 127.0.0.1:PORT.
# It is a cache, so nothing is persisted and each start begins empty.
kurz_redis_start() { kurz__server_start redis "$1" "$2"; }

kurz_redis_stop() { kurz__server_stop redis "$1"; }

# Prints the pid of the redis-server of DIR (the benches measure its CPU time) when it runs.
kurz__redis_pid() { kurz__live_pid "$1/redis.pid" redis-server; }

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
