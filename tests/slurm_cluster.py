"""A single-node Slurm for the tests, from Debian's packages (slurm-wlm, munge): munged, slurmctld and
slurmd on localhost with a minimal slurm.conf in a temporary folder, this machine's CPUs as the
resources. The clients find it through SLURM_CONF. Used by tests/test_slurm.py:

    .venv/bin/python -m pytest tests/test_slurm.py
"""
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

NEEDED = ("munged", "slurmctld", "slurmd", "sbatch", "squeue", "scontrol", "sinfo", "sacct", "scancel")
HOW = "apt-get install -y slurm-wlm munge (what .ci/run installs)"


def require() -> None:
    """Slurm's programs, or one line on how to get them: a failure in CI, a skip elsewhere."""
    missing = [p for p in NEEDED if not shutil.which(p)]
    if missing:
        message = f"a real Slurm is needed ({', '.join(missing)} missing): {HOW}"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def conf(root: Path, host: str, cpus: int, memory_mb: int) -> str:
    user = os.environ.get("USER") or subprocess.run(["id", "-un"], capture_output=True, text=True).stdout.strip()
    ctld, slurmd = free_port(), free_port()
    return f"""ClusterName=dpt-test
SlurmctldHost={host}(127.0.0.1)
SlurmctldPort={ctld}
SlurmdPort={slurmd}
SlurmUser={user}
SlurmdUser={user}
AuthType=auth/munge
AuthInfo=socket={root}/munge/munge.socket,cred_expire=5
CredType=cred/munge
StateSaveLocation={root}/state
SlurmdSpoolDir={root}/spool/%n
SlurmctldPidFile={root}/slurmctld.pid
SlurmdPidFile={root}/slurmd.pid
SlurmctldLogFile={root}/slurmctld.log
SlurmdLogFile={root}/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SchedulerType=sched/backfill
SchedulerParameters=bf_interval=1,sched_min_interval=0,batch_sched_delay=0,sched_interval=2
JobCompType=jobcomp/filetxt
JobCompLoc={root}/jobcomp.txt
JobAcctGatherType=jobacct_gather/none
MinJobAge=300
KillWait=5
JobRequeue=1
EnforcePartLimits=ALL
MailProg=/bin/true
ReturnToService=2
MpiDefault=none
NodeName={host} NodeAddr=127.0.0.1 CPUs={cpus} RealMemory={memory_mb} State=UNKNOWN
PartitionName=debug Nodes={host} Default=YES MaxTime=INFINITE State=UP
"""


class Cluster:
    """The daemons of one test session, and the environment its clients need."""

    def __init__(self, root: Path):
        self.root = root
        self.env = {**os.environ, "SLURM_CONF": str(root / "slurm.conf")}
        self.daemons: list[subprocess.Popen] = []

    def start(self) -> "Cluster":
        r = self.root
        for d in ("munge", "state", "spool"):
            (r / d).mkdir(parents=True, exist_ok=True)
        os.chmod(r, 0o755)
        os.chmod(r / "munge", 0o700)
        key = r / "munge" / "munge.key"
        key.write_bytes(os.urandom(1024))
        key.chmod(0o400)
        subprocess.run(["munged", f"--key-file={key}", f"--socket={r}/munge/munge.socket",
                        f"--pid-file={r}/munge/munged.pid", f"--log-file={r}/munge/munged.log",
                        f"--seed-file={r}/munge/munged.seed", "--force"], check=True, capture_output=True)
        host = socket.gethostname().split(".")[0]
        memory_mb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2**20 // 2
        (r / "slurm.conf").write_text(conf(r, host, os.cpu_count() or 1, memory_mb))
        for program in (["slurmctld", "-D", "-i"], ["slurmd", "-D"]):
            log = open(r / f"{program[0]}.out", "w")
            self.daemons.append(subprocess.Popen(program, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                                 start_new_session=True))
        deadline = time.time() + 60
        while time.time() < deadline:
            state = self.run("sinfo", "-h", "-o", "%T", check=False).stdout.strip()
            if state == "idle":
                return self
            time.sleep(0.5)
        self.stop()
        raise RuntimeError(f"the test Slurm did not come up (sinfo: {state!r}); see {r}/slurmctld.log, slurmd.log")

    def run(self, *argv: str, check: bool = True, **kw) -> subprocess.CompletedProcess:
        return subprocess.run(list(argv), env=self.env, capture_output=True, text=True, check=check, **kw)

    def jobs(self) -> list[str]:
        """Every job of this cluster not yet done: 'id state' per line (array tasks one each)."""
        out = self.run("squeue", "-h", "-r", "-o", "%i %T", check=False).stdout
        return [line for line in out.splitlines() if line.strip()]

    def wait(self, timeout: float) -> None:
        """Until the queue is empty."""
        deadline = time.time() + timeout
        while self.jobs():
            if time.time() > deadline:
                raise TimeoutError(f"Slurm jobs still queued after {timeout:.0f} s: {self.jobs()}")
            time.sleep(1)

    def stop(self) -> None:
        self.run("scancel", "--user", os.environ.get("USER", "root"), check=False)
        for d in self.daemons:
            if d.poll() is None:
                os.killpg(d.pid, signal.SIGTERM)
        for d in self.daemons:
            try:
                d.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(d.pid, signal.SIGKILL)
        conf_path = str(self.root / "slurm.conf").encode()
        for proc in Path("/proc").glob("[0-9]*"):  # step daemons of this cluster only
            try:
                if b"slurmstepd" in (proc / "cmdline").read_bytes() and conf_path in (proc / "environ").read_bytes():
                    os.kill(int(proc.name), signal.SIGKILL)
            except OSError:
                pass
        pid = self.root / "munge" / "munged.pid"
        if pid.is_file():
            try:
                os.kill(int(pid.read_text().strip()), signal.SIGTERM)
            except (OSError, ValueError):
                pass
