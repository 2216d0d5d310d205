"""How fast `workbench --help` starts (target < 0.5 s), next to a bare `python -c pass`.

Prints the median wall time of each over repeated runs in this process and the
ratio, so a slow import shows up no matter how loaded the machine is.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time

RUNS = 15


def median_time(argv: list[str]) -> float:
    times = []
    for _ in range(RUNS):
        t0 = time.perf_counter()
        subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    base = median_time([sys.executable, "-c", "pass"])
    helped = median_time([sys.executable, "-m", "workbench", "--help"])
    case_list = median_time([sys.executable, "-m", "workbench", "case", "list", "--db", "/tmp/wb-bench-startup.db"]) \
        if subprocess.run([sys.executable, "-m", "workbench", "case", "new", "bench", "--db", "/tmp/wb-bench-startup.db"],
                          capture_output=True).returncode == 0 else float("nan")
    print(f"python -c pass          {base * 1000:7.1f} ms (baseline)")
    print(f"workbench --help        {helped * 1000:7.1f} ms  ({helped / base:.1f}x baseline)  target < 500 ms: "
          f"{'OK' if helped < 0.5 else 'MISSED'}")
    print(f"workbench case list     {case_list * 1000:7.1f} ms  ({case_list / base:.1f}x baseline)")


if __name__ == "__main__":
    main()
