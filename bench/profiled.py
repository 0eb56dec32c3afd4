"""Run a Python script under cProfile, profiling only a window the benchmark chooses: SIGUSR1
starts the profiler, SIGUSR2 stops it and writes the stats. Start-up (imports, topic creation,
group join, changelog watermark checks) then stays out of a steady-state profile, which
`python -m cProfile -o` cannot do. Like cProfile, it sees the main thread only.

    python -m bench.profiled OUT.prof cli.py run topologies/scan_pipeline.yaml ...
"""

from __future__ import annotations

import cProfile
import runpy
import signal
import sys


def main() -> None:
    out, script, *args = sys.argv[1:]
    prof = cProfile.Profile()

    def start(*_: object) -> None:
        prof.enable()

    def stop(*_: object) -> None:
        prof.disable()
        prof.dump_stats(out)

    signal.signal(signal.SIGUSR1, start)
    signal.signal(signal.SIGUSR2, stop)
    sys.argv = [script, *args]
    sys.path.insert(0, ".")
    runpy.run_path(script, run_name="__main__")


if __name__ == "__main__":
    main()
