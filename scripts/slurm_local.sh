#!/usr/bin/env bash
# A one-node SLURM on this Debian machine, for the SLURM tests (tests/test_slurm.py) and for
# trying hydra/launcher=slurm_cpu without a cluster. Run as root: installs slurm-wlm and munge
# with apt, writes /etc/slurm/slurm.conf with this host as the only node, creates a munge key
# and starts munged, slurmctld and slurmd directly (no systemd needed). Idempotent: a second
# call finds the daemons running and only waits for the node to be idle.
#   sudo scripts/slurm_local.sh            # then: sinfo; pytest -m slow tests/test_slurm.py
# Environment: SLURM_LOCAL_PARTITION (default "local"), SLURM_LOCAL_CPUS (default `nproc`),
# SLURM_LOCAL_TIMEOUT_S (seconds to wait for an idle node, default 120).
set -euo pipefail

PARTITION="${SLURM_LOCAL_PARTITION:-local}"
CPUS="${SLURM_LOCAL_CPUS:-$(nproc)}"
WAIT_S="${SLURM_LOCAL_TIMEOUT_S:-120}"
CONF_DIR=/etc/slurm
CONF="$CONF_DIR/slurm.conf"
LOG_DIR=/var/log/slurm
NODE="$(hostname -s)"

say() { echo "slurm_local: $*"; }
die() { echo "slurm_local: error: $*" >&2; exit 1; }

[ "$(id -u)" -eq 0 ] || die "run as root (it installs packages and starts daemons)"

install_packages() {
  if command -v slurmctld >/dev/null && command -v slurmd >/dev/null \
      && command -v munged >/dev/null && command -v sinfo >/dev/null; then
    return
  fi
  command -v apt-get >/dev/null || die "apt-get not found: this script needs Debian or Ubuntu"
  say "installing slurm-wlm and munge with apt"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  # The packages' postinst scripts try to start services; without systemd that only warns.
  apt-get install -y -qq --no-install-recommends slurm-wlm munge >/dev/null
}

write_config() {
  local memory_mb
  memory_mb=$(awk '/MemTotal/ {print int($2 / 1024 * 0.9)}' /proc/meminfo)
  mkdir -p "$CONF_DIR" /var/spool/slurmctld /var/spool/slurmd "$LOG_DIR" /run/slurm
  local text
  text=$(cat <<EOF
# Written by scripts/slurm_local.sh: one node ($NODE) on the loopback address, everything as
# root, no accounting (sacct does not work; squeue and scontrol do).
ClusterName=local
SlurmctldHost=$NODE(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
# A requeued job waits one credential lifetime before it may start again (default 120 s).
AuthInfo=cred_expire=20
CryptoType=crypto/munge
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SchedulerType=sched/backfill
ReturnToService=2
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=/run/slurm/slurmctld.pid
SlurmdPidFile=/run/slurm/slurmd.pid
SlurmctldLogFile=$LOG_DIR/slurmctld.log
SlurmdLogFile=$LOG_DIR/slurmd.log
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
# Fast tests: a killed job's processes get 15 s between SIGTERM and SIGKILL, jobs past their
# limit are signalled without grace, and a requeued job may start again at once.
KillWait=15
OverTimeLimit=0
MinJobAge=300
SchedulerParameters=bf_interval=5,sched_interval=5
NodeName=$NODE NodeAddr=127.0.0.1 CPUs=$CPUS RealMemory=$memory_mb State=UNKNOWN
PartitionName=$PARTITION Nodes=$NODE Default=YES MaxTime=INFINITE State=UP OverSubscribe=YES
EOF
)
  if [ ! -f "$CONF" ] || [ "$(cat "$CONF")" != "$text" ]; then
    say "writing $CONF (node $NODE, $CPUS CPUs, partition $PARTITION)"
    printf '%s\n' "$text" > "$CONF"
    CONFIG_CHANGED=1
  fi
}

start_munge() {
  if [ ! -s /etc/munge/munge.key ]; then
    say "creating the munge key"
    mkdir -p /etc/munge
    dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
  fi
  chown -R munge:munge /etc/munge 2>/dev/null || true
  chmod 0700 /etc/munge
  chmod 0400 /etc/munge/munge.key
  mkdir -p /run/munge /var/log/munge /var/lib/munge
  chown munge:munge /run/munge /var/log/munge /var/lib/munge 2>/dev/null || true
  if munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
    return
  fi
  say "starting munged"
  if id munge >/dev/null 2>&1; then
    runuser -u munge -- /usr/sbin/munged
  else
    /usr/sbin/munged --force
  fi
  for _ in $(seq 50); do
    munge -n 2>/dev/null | unmunge >/dev/null 2>&1 && return
    sleep 0.1
  done
  die "munged did not start (see /var/log/munge/munged.log)"
}

# A daemon runs when the pid in its pid file is alive.
pid_of() { cat "/run/slurm/$1.pid" 2>/dev/null || true; }
running() { local pid; pid=$(pid_of "$1"); [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; }

start_daemons() {
  if [ "${CONFIG_CHANGED:-0}" = 1 ]; then
    for daemon in slurmd slurmctld; do
      if running "$daemon"; then
        say "restarting $daemon for the new configuration"
        kill "$(pid_of "$daemon")" || true
        for _ in $(seq 50); do running "$daemon" || break; sleep 0.1; done
      fi
    done
  fi
  if ! running slurmctld; then
    say "starting slurmctld"
    /usr/sbin/slurmctld
  fi
  if ! running slurmd; then
    say "starting slurmd"
    /usr/sbin/slurmd
  fi
}

wait_until_idle() {
  local state=""
  for _ in $(seq "$WAIT_S"); do
    state=$(sinfo --noheader --nodes="$NODE" --format=%t 2>/dev/null | head -n 1 || true)
    case "$state" in
      idle|mix|alloc) say "node $NODE is $state (partition $PARTITION)"; return ;;
      drain*|down*) scontrol update nodename="$NODE" state=resume >/dev/null 2>&1 || true ;;
    esac
    sleep 1
  done
  die "node $NODE is not idle after ${WAIT_S}s (state '${state:-none}'): see $LOG_DIR/*.log"
}

install_packages
write_config
start_munge
start_daemons
wait_until_idle
