#!/usr/bin/env bash
# Build LOCAL TEST STAND-INS for the three registry images this deployment starts from, on a machine where no
# registry is reachable (docker/smoke-test.sh uses them). Each is a Debian 12 rootfs made with debootstrap and
# loaded with `docker import`; none of them is the official image, and none is meant for production:
#
#   convmixer-standin/airflow:3.3.2-python3.11   stands in for apache/airflow:slim-3.3.2-python3.11: Debian's Python
#       3.11, a virtualenv at /home/airflow/.local holding the pinned runtime set (requirements.txt, so Airflow
#       3.3.2 and its providers), the airflow user (uid 50000, gid 0), AIRFLOW_HOME=/opt/airflow, /etc/passwd
#       group-writable, dumb-init and an /entrypoint that mimics the official one (docker/standin/airflow-entrypoint.sh)
#   convmixer-standin/postgres:15                stands in for postgres:16 (Debian's PostgreSQL 15;
#                                                 docker/standin/postgres-entrypoint.sh reads POSTGRES_USER/PASSWORD/DB)
#   convmixer-standin/redis:7                    stands in for redis:7.2-bookworm (Debian's redis-server 7.0)
#
# Usage (as root, dockerd running): docker/standin/build-standin-bases.sh [WORK_DIR]   (default /var/lib/convmixer-standin)
# Needs debootstrap and a reachable Debian mirror (DEBIAN_MIRROR) and Python package index (pip's own settings;
# PIP_FIND_LINKS / an extra index on local disk are bind-mounted into the chroot when set). Idempotent: an image
# that exists is kept (STANDIN_REBUILD=1 rebuilds).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
work=${1:-/var/lib/convmixer-standin}
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
docker=${DOCKER:-docker}
AIRFLOW_STANDIN=${AIRFLOW_STANDIN:-convmixer-standin/airflow:3.3.2-python3.11}
POSTGRES_STANDIN=${POSTGRES_STANDIN:-convmixer-standin/postgres:15}
REDIS_STANDIN=${REDIS_STANDIN:-convmixer-standin/redis:7}

log() { echo "build-standin-bases: $*" >&2; }
have_image() { [[ -z ${STANDIN_REBUILD:-} ]] && "$docker" image inspect "$1" >/dev/null 2>&1; }

# Bind mounts a chroot needs, undone on exit whatever happens.
mounted=()
cleanup() {
  local index
  for ((index = ${#mounted[@]} - 1; index >= 0; index--)); do umount -l "${mounted[index]}" 2>/dev/null || true; done
}
trap cleanup EXIT
bind() {
  mkdir -p "$2"
  mount --bind "$1" "$2"
  mounted+=("$2")
}
enter() {
  local root=$1
  shift
  cp /etc/resolv.conf "$root/etc/resolv.conf"
  chroot "$root" /usr/bin/env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    DEBIAN_FRONTEND=noninteractive HOME=/root PIP_CERT=/etc/ssl/certs/ca-certificates.crt "$@"
}
debian_rootfs() {  # a fresh copy of the debootstrapped base at $1
  local cache=$work/rootfs-debian12
  if [[ ! -x $cache/usr/bin/python3 ]]; then
    log "debootstrap Debian 12 into $cache (minbase + python3, venv, dumb-init)"
    rm -rf "$cache"
    debootstrap --variant=minbase --include=python3,python3-venv,dumb-init,ca-certificates,procps \
      bookworm "$cache" "$mirror" >"$work/debootstrap.log"
  fi
  rm -rf "$1"
  cp -a "$cache" "$1"
  # This machine's CA bundle: where TLS to the package index goes through an intercepting proxy, pip in the
  # chroot and in builds FROM the stand-in (PIP_CERT below) must trust what the host trusts.
  cp /etc/ssl/certs/ca-certificates.crt "$1/etc/ssl/certs/ca-certificates.crt"
}
import_rootfs() {  # import_rootfs ROOT IMAGE --change ...
  local root=$1 image=$2
  shift 2
  rm -rf "$root/var/lib/apt/lists/"* "$root/var/cache/apt/archives/"*.deb "$root/root/.cache"
  : >"$root/etc/resolv.conf"
  log "docker import $image"
  tar -C "$root" -c . | "$docker" import "$@" --message "convmixer test stand-in (docker/standin)" - "$image" >/dev/null
}

mkdir -p "$work"

if have_image "$AIRFLOW_STANDIN"; then
  log "$AIRFLOW_STANDIN exists"
else
  root=$work/rootfs-airflow
  debian_rootfs "$root"
  enter "$root" useradd --uid 50000 --gid 0 --home-dir /home/airflow --create-home --shell /bin/bash airflow
  # As the official image: any uid started with gid 0 may add itself to /etc/passwd (its entrypoint does so).
  chmod g+w "$root/etc/passwd"
  install -d -o 50000 -g 0 -m 0775 "$root/opt/airflow"
  enter "$root" python3 -m venv /home/airflow/.local
  install -m 0644 "$repo/requirements.txt" "$root/tmp/requirements.txt"
  pip_args=()
  for folder in ${PIP_FIND_LINKS:-}; do
    [[ -d $folder ]] && bind "$folder" "$root$folder" && pip_args+=(--find-links "$folder")
  done
  # Local "simple" indexes (STANDIN_LOCAL_INDEXES=/x/simple ...): the folder above each is bound, since the
  # index pages link to files beside simple/.
  for folder in ${STANDIN_LOCAL_INDEXES:-}; do
    [[ -d $folder ]] || continue
    bind "$(dirname "$folder")" "$root$(dirname "$folder")"
    pip_args+=(--extra-index-url "file://$folder")
  done
  log "pip install -r requirements.txt into $AIRFLOW_STANDIN (torch ${PIP_FIND_LINKS:+from $PIP_FIND_LINKS, }may take minutes)"
  enter "$root" /home/airflow/.local/bin/pip install --no-cache-dir -q --disable-pip-version-check \
    "${pip_args[@]}" -r /tmp/requirements.txt
  cleanup
  mounted=()
  install -m 0755 "$here/airflow-entrypoint.sh" "$root/entrypoint"
  chown -R 50000:0 "$root/home/airflow"
  rm -f "$root/tmp/requirements.txt"
  import_rootfs "$root" "$AIRFLOW_STANDIN" \
    --change 'ENV PATH=/home/airflow/.local/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV AIRFLOW_HOME=/opt/airflow' --change 'ENV AIRFLOW_USER_HOME_DIR=/home/airflow' \
    --change 'ENV HOME=/home/airflow' --change 'ENV LANG=C.UTF-8' \
    --change 'ENV PIP_CERT=/etc/ssl/certs/ca-certificates.crt' \
    --change 'LABEL org.opencontainers.image.title="convmixer TEST STAND-IN for apache/airflow:slim-3.3.2-python3.11"' \
    --change 'USER 50000' --change 'WORKDIR /opt/airflow' \
    --change 'ENTRYPOINT ["/usr/bin/dumb-init", "--", "/entrypoint"]' --change 'CMD []'
  rm -rf "$root"
fi

if have_image "$POSTGRES_STANDIN"; then
  log "$POSTGRES_STANDIN exists"
else
  root=$work/rootfs-postgres
  debian_rootfs "$root"
  log "apt-get install postgresql into $POSTGRES_STANDIN"
  enter "$root" apt-get update -qq
  enter "$root" apt-get install -y -qq --no-install-recommends postgresql >/dev/null
  install -m 0755 "$here/postgres-entrypoint.sh" "$root/usr/local/bin/postgres-entrypoint.sh"
  pgbins=("$root"/usr/lib/postgresql/*/bin)
  pgbin=${pgbins[-1]#"$root"/}
  import_rootfs "$root" "$POSTGRES_STANDIN" \
    --change "ENV PATH=/$pgbin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin" \
    --change 'ENV PGDATA=/var/lib/postgresql/data' \
    --change 'LABEL org.opencontainers.image.title="convmixer TEST STAND-IN for postgres:16"' \
    --change 'ENTRYPOINT ["/usr/local/bin/postgres-entrypoint.sh"]'
  rm -rf "$root"
fi

if have_image "$REDIS_STANDIN"; then
  log "$REDIS_STANDIN exists"
else
  root=$work/rootfs-redis
  debian_rootfs "$root"
  log "apt-get install redis-server into $REDIS_STANDIN"
  enter "$root" apt-get update -qq
  enter "$root" apt-get install -y -qq --no-install-recommends redis-server >/dev/null
  import_rootfs "$root" "$REDIS_STANDIN" \
    --change 'LABEL org.opencontainers.image.title="convmixer TEST STAND-IN for redis:7.2-bookworm"' \
    --change 'CMD ["redis-server", "--protected-mode", "no"]'
  rm -rf "$root"
fi
log "stand-in bases: $AIRFLOW_STANDIN $POSTGRES_STANDIN $REDIS_STANDIN"
