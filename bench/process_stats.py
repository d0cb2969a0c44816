"""What the benchmarks read about a running process."""


def rss_mb(pid):
    """Resident memory of `pid` in MiB (VmRSS), -1 when /proc does not say."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return -1
