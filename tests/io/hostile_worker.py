"""Runs each hostile case in one process and prints a JSON line per case: the error, whether it
named the path, the time taken and the growth of peak RSS over the warmed-up baseline."""

from __future__ import annotations

import json
import resource
import signal
import sys
import time


class Hang(Exception):
    pass


def _alarm(signum, frame):
    raise Hang()


def main() -> None:
    from core.errors import SlicewiseError
    from core.io import find_volumes, load_volume

    cases = json.loads(sys.stdin.read())
    warm = cases.pop(0)  # a valid file of each kind: imports every decoder before the baseline
    for path in warm:
        load_volume(path)
    signal.signal(signal.SIGALRM, _alarm)
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    for name, path, op in cases:
        t0 = time.perf_counter()
        result = {"name": name, "path": path}
        signal.alarm(5)
        try:
            if op == "load":
                load_volume(path)
                result["error"] = None
            elif op == "find":
                result["found"] = len(find_volumes(path))
                result["error"] = None
            else:
                find_volumes(path)
                result["error"] = None
        except Hang:
            result["error"] = "HANG"
        except SlicewiseError as exc:
            result["error"] = type(exc).__name__
            result["named"] = path in str(exc)
            result["message"] = str(exc)[:300]
        except BaseException as exc:  # noqa: BLE001 - the point is to see raw errors
            result["error"] = "RAW " + type(exc).__name__
            result["message"] = str(exc)[:300]
        finally:
            signal.alarm(0)
        result["seconds"] = round(time.perf_counter() - t0, 3)
        result["rss_growth_mb"] = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) / 1024
        print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
