"""What the idle clients of benches/idle.sh share (idle_client.py for HTTP/1.1,
idle_h2_client.py for HTTP/2): their common options, the descriptor limit, and the protocol
with the driver — one JSON summary line to --ready once every connection is idle (or failed),
then a hold until --release exists (at most --hold seconds). Stdlib only.
"""

import json
import os
import resource
import sys
import time


def add_common_args(ap):
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--conns", type=int, default=8000)
    ap.add_argument("--path", default="/")
    ap.add_argument("--ready", help="file to write when every connection is idle")
    ap.add_argument("--release", help="file whose existence ends the hold")
    ap.add_argument("--hold", type=float, default=60.0, help="longest hold, seconds")
    ap.add_argument("--timeout", type=float, default=60.0, help="longest set-up, seconds")


def raise_nofile(conns, who):
    """Raises RLIMIT_NOFILE to its hard limit; exits when `conns` connections cannot fit."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    except (ValueError, OSError):
        pass
    limit = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if conns + 32 > limit:
        sys.exit(f"{who}: {conns} connections need more descriptors than {limit}")


def ready_and_hold(a, ok, failed, errors, started):
    """Announces the set-up's summary on --ready, holds, and returns the summary with held_s."""
    setup_s = time.monotonic() - started
    summary = {
        "conns": a.conns,
        "ok": ok,
        "failed": failed,
        "errors": errors,
        "setup_s": round(setup_s, 3),
    }
    if a.ready:
        # Written to a temporary name and renamed: its appearance means it is complete.
        tmp = a.ready + ".tmp"
        with open(tmp, "w") as f:
            f.write(json.dumps(summary) + "\n")
        os.rename(tmp, a.ready)
    hold_end = time.monotonic() + a.hold
    while a.release and not os.path.exists(a.release) and time.monotonic() < hold_end:
        time.sleep(0.05)
    summary["held_s"] = round(time.monotonic() - started - setup_s, 3)
    return summary
