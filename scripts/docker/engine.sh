#!/usr/bin/env bash
# Makes a Docker engine available for `sam build` / `sam local` and stops it again.
#
#   scripts/docker/engine.sh start   # reuse a running engine, else install docker.io and start dockerd
#   scripts/docker/engine.sh stop    # stop the dockerd this script started (by its PID); no-op otherwise
#   scripts/docker/engine.sh env     # print the DOCKER_HOST line to eval
#   scripts/docker/engine.sh status
#   scripts/docker/engine.sh gateway # the host's address on the default bridge (containers reach the host there)
#
# A dockerd started here keeps everything under .state/docker (data root, exec root, socket, PID, log)
# so it never touches a system engine and `make clean` removes it. Callers use the socket through
# DOCKER_HOST, which `start` and `env` print.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$(pwd)
STATE="$ROOT/.state/docker"
SOCKET="$STATE/docker.sock"
PIDFILE="$STATE/dockerd.pid"
LOG="$STATE/dockerd.log"
OWN_HOST="unix://$SOCKET"

log() { echo "engine: $*" >&2; }

engine_answers() {  # $1 = DOCKER_HOST value ("" = the client's default)
    if [[ -n "$1" ]]; then DOCKER_HOST="$1" docker info >/dev/null 2>&1; else docker info >/dev/null 2>&1; fi
}

own_pid() {  # PID of the dockerd this script started, if it still runs
    [[ -f "$PIDFILE" ]] || return 1
    local pid
    pid=$(cat "$PIDFILE")
    [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null && grep -q dockerd "/proc/$pid/comm" 2>/dev/null && echo "$pid"
}

install_engine() {
    # socat relays host services that listen on loopback only (the embedded PostgreSQL) to the bridge.
    command -v dockerd >/dev/null && command -v docker >/dev/null && command -v socat >/dev/null && return 0
    [[ $(id -u) == 0 ]] || { log "dockerd is missing and installing it needs root (apt-get install docker.io)"; exit 1; }
    log "installing Debian's docker.io and socat"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    # policy-rc.d 101 keeps the package from starting a system daemon: this script starts its own.
    local policy=/usr/sbin/policy-rc.d created_policy=""
    if [[ ! -e $policy ]]; then printf '#!/bin/sh\nexit 101\n' >"$policy"; chmod +x "$policy"; created_policy=1; fi
    apt-get install -y -qq --no-install-recommends docker.io iptables socat >/dev/null
    # (an if, not `[[ ]] && rm`: where the image ships its own policy-rc.d, that line's status 1
    # was the function's, and `set -e` ended `start` right after the install, silently)
    if [[ -n $created_policy ]]; then rm -f "$policy"; fi
}

start() {
    if [[ -n "${DOCKER_HOST:-}" && "${DOCKER_HOST}" != "$OWN_HOST" ]] && engine_answers "$DOCKER_HOST"; then
        log "using the engine at DOCKER_HOST=$DOCKER_HOST"; echo "export DOCKER_HOST=$DOCKER_HOST"; return 0
    fi
    if [[ -z "${DOCKER_HOST:-}" ]] && command -v docker >/dev/null && engine_answers ""; then
        log "using the running default engine"; echo "export DOCKER_HOST=unix:///var/run/docker.sock"; return 0
    fi
    if own_pid >/dev/null && engine_answers "$OWN_HOST"; then
        log "already running (pid $(own_pid))"; echo "export DOCKER_HOST=$OWN_HOST"; return 0
    fi
    install_engine
    mkdir -p "$STATE/data" "$STATE/exec"
    rm -f "$SOCKET" "$PIDFILE"
    log "starting dockerd (log: ${LOG#"$ROOT/"})"
    # Own data root, exec root, pidfile and socket: a second engine on the same machine stays untouched.
    setsid dockerd \
        --host "$OWN_HOST" \
        --data-root "$STATE/data" \
        --exec-root "$STATE/exec" \
        --pidfile "$PIDFILE" \
        >>"$LOG" 2>&1 </dev/null &
    local started_at=$SECONDS
    until engine_answers "$OWN_HOST"; do
        if (( SECONDS - started_at > 60 )); then log "dockerd not ready after 60 s; last log lines:"; tail -20 "$LOG" >&2; exit 1; fi
        sleep 0.3
    done
    log "ready in $(( SECONDS - started_at )) s (pid $(cat "$PIDFILE"))"
    echo "export DOCKER_HOST=$OWN_HOST"
}

stop() {
    local pid
    if ! pid=$(own_pid); then log "no dockerd started by this script is running"; rm -f "$PIDFILE"; return 0; fi
    log "stopping dockerd (pid $pid)"
    kill -TERM "$pid"
    for _ in $(seq 1 150); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    if kill -0 "$pid" 2>/dev/null; then log "dockerd did not stop in 30 s; sending KILL"; kill -KILL "$pid"; fi
    rm -f "$PIDFILE" "$SOCKET"
    log "stopped"
}

case "${1:-}" in
    start) start ;;
    stop) stop ;;
    env) if own_pid >/dev/null; then echo "export DOCKER_HOST=$OWN_HOST"; else echo "export DOCKER_HOST=${DOCKER_HOST:-unix:///var/run/docker.sock}"; fi ;;
    gateway)  # SAM's --docker-network host does not share the host's network: containers stay on the bridge
        ip -4 -o addr show docker0 | awk '{split($4, a, "/"); print a[1]; exit}' ;;
    status) if pid=$(own_pid); then echo "running (pid $pid, DOCKER_HOST=$OWN_HOST)"; else echo "not running"; exit 1; fi ;;
    *) echo "usage: $0 start|stop|env|status|gateway" >&2; exit 2 ;;
esac
