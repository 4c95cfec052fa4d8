"""Time `pcapsmtp analyze` against tshark extracting SMTP and TLS fields, same file.

    python3 benchmarks/run.py                    # makes benchmarks/out/bench.pcap (300k pkts)
    python3 benchmarks/run.py --packets 1000000  # bigger
    python3 benchmarks/run.py --file big.pcap    # your own capture

Prints wall time, packets per second and peak resident memory of each, and
the throughput ratio.  Peak memory comes from wait4()'s rusage of each child
process, so the two are measured the same way.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(1, str(HERE.parent))  # run from a checkout without installing

TSHARK_FIELDS = ["frame.number", "tcp.stream", "smtp.req.command", "smtp.req.parameter",
                 "smtp.response.code", "tls.record.content_type", "tls.handshake.type"]


def measure(cmd: list[str], cwd: Path | None = None) -> tuple[float, int, int]:
    """(seconds, peak RSS in MiB, exit status) of one command, output discarded.

    Also prints the CPU seconds (user + system, the command's worker processes
    included): on a shared machine the wall time moves by +-20% from run to run."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=cwd)
    _, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    print(f"  ({cmd[0].rsplit('/', 1)[-1]}: {usage.ru_utime + usage.ru_stime:.2f} s CPU)")
    if proc.returncode:
        err = proc.stderr.read().decode(errors="replace").strip().splitlines() if proc.stderr \
            else []
        print(f"  {' '.join(cmd[:3])}...: exit {proc.returncode}: {err[-1:] }", file=sys.stderr)
    return elapsed, usage.ru_maxrss // 1024, proc.returncode


def count_packets(path: Path) -> int:
    from pcapsmtp.capture import open_capture

    with open_capture(str(path)) as reader:
        for _ in reader:
            pass
        return reader.info.packets


def _command() -> tuple[list[str], Path]:
    """The pcapsmtp to time and the folder to run it from: the installed console script,
    as users run it, from outside the checkout (from the repository's root, ``python -m
    pcapsmtp`` imports the source tree, which holds the C reader only after an editable
    install); else, not installed, the checkout's module from its root."""
    script = Path(sys.executable).parent / "pcapsmtp"
    if script.exists():
        return [str(script)], Path(tempfile.gettempdir())
    return [sys.executable, "-m", "pcapsmtp"], HERE.parent


_C_READER = ("import os; from pcapsmtp.packets import Decoder; "
             "print('used' if Decoder().fast_path(1) else 'not used ($PCAPSMTP_PURE_PYTHON "
             "is set)' if os.environ.get('PCAPSMTP_PURE_PYTHON') else 'not built (pure "
             "Python; pip install needs gcc and the Python headers)')")


def _c_reader(cwd: Path) -> str:
    """Whether the timed run reads with the optional C reader: without it (no C compiler
    at install time, or $PCAPSMTP_PURE_PYTHON set) it takes a third longer."""
    out = subprocess.run([sys.executable, "-c", _C_READER], cwd=cwd, capture_output=True,
                         text=True, check=False)
    return out.stdout.strip() or f"unknown ({out.stderr.strip()[-200:]})"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--file", type=Path, help="capture to measure (default: make one)")
    ap.add_argument("--packets", type=int, default=300_000)
    ap.add_argument("--tshark-engine", action="store_true",
                    help="also time `pcapsmtp analyze --engine tshark` (slow: minutes)")
    args = ap.parse_args()
    path = args.file
    if path is None:
        from make_capture import write

        path = HERE / "out" / f"bench-{args.packets}.pcap"
        if not path.exists():
            path.parent.mkdir(exist_ok=True)
            print(f"making {path} ...")
            write(path, args.packets)
    packets = count_packets(path)
    size = path.stat().st_size / 2**20
    print(f"capture: {path} ({packets:,} packets, {size:.0f} MiB)")

    command, cwd = _command()
    ours = [*command, "analyze", "--format", "json", "-o", os.devnull, str(path.resolve())]
    print(f"C reader (pcapsmtp/_fastpcap.c): {_c_reader(cwd)}")
    t_ours, m_ours, rc = measure(ours, cwd)
    print(f"pcapsmtp analyze : {t_ours:7.2f} s  {packets / t_ours:10,.0f} packets/s  "
          f"peak {m_ours} MiB")
    if not shutil.which("tshark"):
        print("tshark not installed: no comparison (apt install tshark)")
        return 1 if rc else 0
    theirs = ["tshark", "-n", "-r", str(path), "-Y", "smtp || tls", "-T", "fields"]
    for f in TSHARK_FIELDS:
        theirs += ["-e", f]
    t_ts, m_ts, _ = measure(theirs)
    print(f"tshark fields    : {t_ts:7.2f} s  {packets / t_ts:10,.0f} packets/s  "
          f"peak {m_ts} MiB")
    print(f"ratio: pcapsmtp is {t_ts / t_ours:.1f}x tshark's throughput "
          f"(target 5x); peak memory {m_ours} MiB (target < 200 MiB)")
    if args.tshark_engine:
        t_eng, m_eng, rc_eng = measure([*ours[:-1], "--engine", "tshark", ours[-1]], cwd)
        print(f"--engine tshark  : {t_eng:7.2f} s  {packets / t_eng:10,.0f} packets/s  "
              f"peak {m_eng} MiB  ({t_eng / t_ours:.1f}x slower than the native engine)")
        rc = rc or rc_eng
    return 1 if rc else 0


if __name__ == "__main__":
    sys.exit(main())
