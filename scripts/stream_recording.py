"""Write a recording out as a camera would deliver it: its packets, unchanged, remuxed into a
streamable container (Matroska, MPEG-TS) at the pace of their timestamps, to a growing file or
to standard output.  The live detector follows it (``python -m minigpt4.detect --follow``);
`make demo`, the tests and ``benchmarks/bench_detect.py --live`` use it in place of a camera.

    python scripts/stream_recording.py session.mp4 live.mkv            # real time, into a growing file
    python scripts/stream_recording.py session.mp4 - | python -m minigpt4.detect ... --options detect.input.path=-
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import av

FORMATS = {".mkv": "matroska", ".ts": "mpegts"}
# The muxer writes a Matroska cluster at least this often (ms), so a follower sees frames promptly.
CLUSTER_MS = "100"


def stream(source: str | Path, target: str, speed: float = 1.0, container_format: str | None = None) -> int:
    """Remux ``source`` into ``target`` (a path, or ``-`` for standard output), sleeping so that a
    packet leaves no earlier than its timestamp divided by ``speed``; returns packets written."""
    fmt = container_format or FORMATS.get(Path(target).suffix, "matroska")
    output_target = sys.stdout.buffer if target == "-" else str(target)
    options = {"cluster_time_limit": CLUSTER_MS} if fmt == "matroska" else {}
    written = 0
    with av.open(str(source)) as inputs, av.open(output_target, "w", format=fmt, options=options,
                                                  container_options={"flush_packets": "1"}) as outputs:
        streams = [s for s in inputs.streams if s.type in ("video", "audio")]
        mapped = {s.index: outputs.add_stream_from_template(s) for s in streams}
        started = time.monotonic()
        first = None
        for packet in inputs.demux(*streams):
            if packet.dts is None:  # the demuxer's flush packet
                continue
            at = float(packet.pts * packet.time_base) if packet.pts is not None else None
            if at is not None:
                first = at if first is None else first
                delay = (at - first) / speed - (time.monotonic() - started)
                if delay > 0:
                    time.sleep(delay)
            packet.stream = mapped[packet.stream.index]
            outputs.mux(packet)
            written += 1
    return written


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", help="a recording (any container PyAV reads)")
    parser.add_argument("target", help="the growing file (.mkv, .ts) or - for standard output")
    parser.add_argument("--speed", type=float, default=1.0, help="times real time (default 1)")
    parser.add_argument("--format", default=None, help="output container format (default by suffix; matroska for -)")
    args = parser.parse_args(argv)
    try:
        stream(args.source, args.target, args.speed, args.format)
    except (BrokenPipeError, av.error.PyAVCallbackError):  # the reader stopped before the recording ended
        print("stream_recording: the reader closed the pipe", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
