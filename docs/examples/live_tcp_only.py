"""Run a VNF on live network interfaces: frames arriving on one interface go through the VNF, and
what it forwards leaves by another (as root, or with CAP_NET_RAW).

    python live_tcp_only.py --in eth1 --out eth2 --next-hop 02:00:00:00:00:02 --seconds 10

The VNF is the tutorial's ``TcpOnly``: TCP is forwarded, everything else dropped with a reason.
Forwarded frames get the outgoing interface's MAC as source and ``--next-hop`` as destination, as a
router would write them. On exit a one-line JSON summary goes to stdout.
"""

from __future__ import annotations

import argparse
import json

import numpy as np

import vnfkit as vk
from vnfkit.io.live import LiveSink, LiveSource


class TcpOnly(vk.VNF):
    """Forward TCP to port 1, drop everything else with the reason POLICY."""

    name = "tcp_only"

    def process(self, batch, ctx):
        tcp = batch.key["proto"] == 6
        batch.port[:] = np.where(tcp, 1, 0)
        batch.drop[~tcp] = int(vk.DropReason.POLICY)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--in", dest="inside", required=True, help="interface to receive on")
    p.add_argument("--out", dest="outside", required=True, help="interface to send the forwarded frames on")
    p.add_argument("--next-hop", required=True, help="destination MAC of the forwarded frames")
    p.add_argument("--seconds", type=float, default=10.0, help="stop after this long")
    args = p.parse_args()

    # idle_ms: when nothing arrives for 5 ms the source yields an empty batch, so the runner
    # releases what it holds instead of waiting for the next frame.
    with LiveSource(args.inside, idle_ms=5, duration_s=args.seconds) as source, \
            LiveSink(args.outside, dst_mac=args.next_hop) as sink, \
            vk.Runner(TcpOnly, queues=1) as runner:
        result = runner.run(iter(source), on_output=sink)
        sent = sink.stats()
    print(json.dumps({"packets": result.packets, "forwarded": result.forwarded, "drops": result.drops,
                      "sent": sent}))


if __name__ == "__main__":
    main()
