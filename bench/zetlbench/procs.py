"""Timed child processes: wall clock, rusage (CPU, peak RSS), RSS over time, CPU of a cluster."""

import os
import signal
import subprocess
import tempfile
import threading
import time


GNU_TIME = "/usr/bin/time"


def child_pid(pid):
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            kids = f.read().split()
        return int(kids[0]) if kids else None
    except OSError:
        return None


def run_timed(cmd, cwd=None, env=None, stdout_path=None, stderr_path=None, timeout=3600):
    """Runs cmd; returns wall/user/sys seconds, peak RSS (KiB) and RSS samples.

    Peak RSS comes from GNU time's %M, not from our own wait4(): a child that
    Python spawns inherits the spawning Python process's memory high-water
    mark into its ru_maxrss at exec (vfork/fork + exec), so wait4() would
    report max(harness, child). time(1) is small and forks the measured
    process itself, so its %M is the measured process's own peak. CPU (user +
    sys) comes from wait4() of time(1), which includes the child it reaped.
    """
    out = open(stdout_path, "wb") if stdout_path else subprocess.DEVNULL
    err = open(stderr_path, "wb") if stderr_path else subprocess.DEVNULL
    tfile = None
    full = list(cmd)
    if os.access(GNU_TIME, os.X_OK):
        fd, tfile = tempfile.mkstemp(prefix="zetlbench-time-")
        os.close(fd)
        full = [GNU_TIME, "-f", "%M", "-o", tfile, "--"] + full
    samples = []
    t0 = time.monotonic()
    proc = subprocess.Popen(full, cwd=cwd, env=env, stdout=out, stderr=err)
    stop = threading.Event()

    def sample():
        target = None
        while not stop.is_set():
            if target is None:
                target = child_pid(proc.pid) if tfile else proc.pid
            if target is not None:
                try:
                    with open(f"/proc/{target}/status") as f:
                        for line in f:
                            if line.startswith("VmRSS:"):
                                samples.append((round(time.monotonic() - t0, 3),
                                                int(line.split()[1])))
                                break
                except OSError:
                    pass
            stop.wait(0.1 if target else 0.005)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        while True:
            pid, status, ru = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.monotonic() - t0 > timeout:
                kid = child_pid(proc.pid)
                if kid:
                    os.kill(kid, signal.SIGKILL)
                proc.kill()
                _, status, ru = os.wait4(proc.pid, 0)
                raise RuntimeError(f"{os.path.basename(cmd[0])} did not finish within "
                                   f"{timeout}s")
            time.sleep(0.002)
    finally:
        stop.set()
        sampler.join()
        for fobj in (out, err):
            if fobj is not subprocess.DEVNULL:
                fobj.close()
    wall = time.monotonic() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    peak_kb, source = ru.ru_maxrss, "wait4 ru_maxrss (may include the harness's own peak)"
    if tfile:
        try:
            with open(tfile) as f:
                lines = [l for l in f.read().split("\n") if l.strip()]
            peak_kb, source = int(lines[-1].split()[-1]), "GNU time %M"
        except (OSError, ValueError, IndexError):
            pass
        os.unlink(tfile)
    if samples:
        peak_kb = max(peak_kb, max(kb for _, kb in samples))
    return {
        "exit_code": proc.returncode,
        "wall_s": round(wall, 4),
        "user_s": round(ru.ru_utime, 4),
        "sys_s": round(ru.ru_stime, 4),
        "cpu_s": round(ru.ru_utime + ru.ru_stime, 4),
        "peak_rss_kb": peak_kb,
        "peak_rss_source": source,
        "rss_samples_kb": downsample(samples, 400),
    }


def downsample(samples, n):
    if len(samples) <= n:
        return samples
    step = len(samples) / n
    return [samples[int(i * step)] for i in range(n)] + [samples[-1]]


def tail(path, n=4000):
    try:
        with open(path, errors="replace") as f:
            return f.read()[-n:]
    except OSError:
        return ""


CLK_TCK = os.sysconf("SC_CLK_TCK")


def proc_cpu_ticks(pid, children=True):
    """utime+stime+cutime+cstime of pid (cutime: its reaped children's CPU)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            data = f.read()
    except OSError:
        return 0
    fields = data[data.rindex(")") + 2:].split()
    return sum(int(x) for x in fields[11:15 if children else 13])


def cluster_cpu_s(postmaster_pid):
    """CPU seconds used so far by a PostgreSQL cluster: the postmaster, every live child
    (backends, walsenders, checkpointer, ...) and, through the postmaster's cutime and
    cstime, every child it has already reaped. Deltas of this are exact up to a child
    that exits between the two reads of one sample (one backend's CPU, at most)."""
    if postmaster_pid is None:
        return None
    total = proc_cpu_ticks(postmaster_pid)
    try:
        with open(f"/proc/{postmaster_pid}/task/{postmaster_pid}/children") as f:
            kids = [int(k) for k in f.read().split()]
    except OSError:
        kids = []
    for k in kids:
        total += proc_cpu_ticks(k)
    return total / CLK_TCK


class TimedProcess:
    """A long-running process (zetl run as a daemon) under GNU time: started and
    stopped by the caller; the same figures as run_timed()."""

    def __init__(self, cmd, cwd=None, env=None, stderr_path=None):
        self.err = open(stderr_path, "wb") if stderr_path else subprocess.DEVNULL
        self.tfile = None
        full = list(cmd)
        if os.access(GNU_TIME, os.X_OK):
            fd, self.tfile = tempfile.mkstemp(prefix="zetlbench-time-")
            os.close(fd)
            full = [GNU_TIME, "-f", "%M", "-o", self.tfile, "--"] + full
        self.samples = []
        self.t0 = time.monotonic()
        self.proc = subprocess.Popen(full, cwd=cwd, env=env, stdout=subprocess.DEVNULL,
                                     stderr=self.err)
        self.stop_ev = threading.Event()
        self.sampler = threading.Thread(target=self._sample, daemon=True)
        self.sampler.start()

    def target(self):
        return child_pid(self.proc.pid) if self.tfile else self.proc.pid

    def _sample(self):
        target = None
        while not self.stop_ev.is_set():
            if target is None:
                target = self.target()
            if target is not None:
                try:
                    with open(f"/proc/{target}/status") as f:
                        for line in f:
                            if line.startswith("VmRSS:"):
                                self.samples.append((round(time.monotonic() - self.t0, 3),
                                                     int(line.split()[1])))
                                break
                except OSError:
                    pass
            self.stop_ev.wait(0.1 if target else 0.005)

    def alive(self):
        return self.proc.poll() is None

    def stop(self, sig=signal.SIGTERM, timeout=120):
        kid = self.target()
        if kid and self.proc.poll() is None:
            os.kill(kid, sig)
        t = time.monotonic()
        while True:
            pid, status, ru = os.wait4(self.proc.pid, os.WNOHANG)
            if pid:
                break
            if time.monotonic() - t > timeout:
                kid = self.target()
                if kid:
                    os.kill(kid, signal.SIGKILL)
                _, status, ru = os.wait4(self.proc.pid, 0)
                break
            time.sleep(0.01)
        self.stop_ev.set()
        self.sampler.join()
        if self.err is not subprocess.DEVNULL:
            self.err.close()
        peak = ru.ru_maxrss
        if self.tfile:
            try:
                with open(self.tfile) as f:
                    lines = [l for l in f.read().split("\n") if l.strip()]
                peak = int(lines[-1].split()[-1])
            except (OSError, ValueError, IndexError):
                pass
            os.unlink(self.tfile)
        if self.samples:
            peak = max(peak, max(kb for _, kb in self.samples))
        return {"exit_code": os.waitstatus_to_exitcode(status),
                "wall_s": round(time.monotonic() - self.t0, 4),
                "user_s": round(ru.ru_utime, 4), "sys_s": round(ru.ru_stime, 4),
                "cpu_s": round(ru.ru_utime + ru.ru_stime, 4), "peak_rss_kb": peak,
                "peak_rss_source": "GNU time %M" if self.tfile else "wait4 ru_maxrss",
                "rss_samples_kb": downsample(self.samples, 400)}
