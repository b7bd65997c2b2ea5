#!/usr/bin/env bash
# Starts a single-node Slurm cluster on this machine (munge, slurmctld, slurmd) for btd's Slurm
# executor tests, installing Debian's slurm-wlm and munge packages when they are missing.
#
# Idempotent: a cluster that already answers `sinfo` with a usable node is left as it is. It writes
# /etc/slurm/slurm.conf only when there is none or when it is one this script wrote (it carries the
# marker line below), so a real cluster's configuration is never replaced. Needs root (or sudo).
#
# Exit 0 and prints `sinfo` when the cluster takes jobs; exit 1 with the reason otherwise.
set -euo pipefail

MARK="# written by btd .ci/slurm-up.sh"
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"

usable() { timeout 15 sinfo -h -o %T 2>/dev/null | grep -Eq '^(idle|mix|alloc)'; }

if command -v sinfo >/dev/null 2>&1 && usable; then
  echo "slurm-up: a Slurm cluster already answers"
  sinfo
  exit 0
fi

if ! command -v slurmctld >/dev/null 2>&1 || ! command -v munged >/dev/null 2>&1; then
  $sudo apt-get update -q
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends \
    slurm-wlm munge
fi

host=$(hostname -s)
cpus=$(nproc)
mem=$(awk '/MemTotal/ {print int($2 / 1024 * 0.8)}' /proc/meminfo)
conf=/etc/slurm/slurm.conf
if [ -e "$conf" ] && ! grep -qF "$MARK" "$conf"; then
  echo "slurm-up: $conf exists and was not written by this script; not touching it" >&2
  exit 1
fi
state=/var/spool/btd-slurm
$sudo mkdir -p /etc/slurm "$state/ctld" "$state/d" /var/log/slurm /run/munge
$sudo tee "$conf" >/dev/null <<EOF
$MARK
ClusterName=btdci
SlurmctldHost=$host
AuthType=auth/munge
SlurmUser=root
SlurmdUser=root
StateSaveLocation=$state/ctld
SlurmdSpoolDir=$state/d
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
SchedulerType=sched/backfill
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
# Finished jobs stay visible to scontrol for 10 minutes (there is no accounting database).
MinJobAge=600
KillWait=5
NodeName=$host CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=120 State=UP
EOF

# munge: a key (Debian's package makes one), then the daemon.
if [ ! -s /etc/munge/munge.key ]; then
  $sudo mungekey --create 2>/dev/null || $sudo create-munge-key -f
fi
$sudo chown -R munge:munge /etc/munge /run/munge /var/log/munge /var/lib/munge 2>/dev/null || true
if ! munge -n >/dev/null 2>&1; then
  if [ -z "$sudo" ]; then
    runuser -u munge -- /usr/sbin/munged 2>/dev/null || /usr/sbin/munged --force
  else
    sudo -u munge /usr/sbin/munged 2>/dev/null || sudo /usr/sbin/munged --force
  fi
fi
for _ in $(seq 1 20); do munge -n >/dev/null 2>&1 && break; sleep 0.5; done
munge -n | unmunge >/dev/null || { echo "slurm-up: munge does not work" >&2; exit 1; }

fail() {
  echo "slurm-up: $*" >&2
  tail -n 20 /var/log/slurm/slurmctld.log /var/log/slurm/slurmd.log >&2 2>/dev/null || true
  exit 1
}
pgrep -x slurmctld >/dev/null || $sudo slurmctld || fail "slurmctld did not start"
pgrep -x slurmd >/dev/null || $sudo slurmd || fail "slurmd did not start"
sleep 1
pgrep -x slurmctld >/dev/null || fail "slurmctld exited at start"
pgrep -x slurmd >/dev/null || fail "slurmd exited at start"
for _ in $(seq 1 60); do
  if usable; then
    echo "slurm-up: single-node cluster ready"
    sinfo
    exit 0
  fi
  # A node that registered as down (e.g. after an unclean stop) is brought back.
  timeout 15 $sudo scontrol update nodename="$host" state=resume >/dev/null 2>&1 || true
  sleep 1
done
timeout 15 sinfo >&2 || true
fail "the cluster did not become usable within a minute"

