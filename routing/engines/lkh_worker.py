"""Runs one LKH-3 solve in its own process: a parameter file path in, the tour as JSON on stdout.

LKH keeps global state between runs and elkai does not reset all of it: a second windowed solve in the
same process can crash, so every solve gets a fresh process (about 0.1 s).
"""

import json
import sys

import elkai._elkai as _lkh

if __name__ == "__main__":
    with open(sys.argv[1]) as fh:
        params = fh.read()
    print(json.dumps(_lkh.solve_problem(params, "")))
