"""A packet flooder for attack scenarios. Every packet carries DSCP --dscp (IP_TOS = dscp << 2), so counters
count it as attack traffic. It refuses destinations outside --subnets (the experiment's segments).

    python -m nestbed.apps.flooder --dst 10.0.1.3 --subnets 10.0.1.0/24,10.0.2.0/24 --proto udp|tcp-syn|icmp \
        --length 64 --rate 1000 [--dport 80] [--duration S] [--dscp 8]

--rate is packets per second (0: as fast as possible). tcp-syn and icmp use raw sockets (root, as in nodes).
"""
from __future__ import annotations

import argparse
import ipaddress
import random
import socket
import struct
import sys
import time

from nestbed.apps.mailbox import Stop, record


def checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    total = (total >> 16) + (total & 0xFFFF)
    total += total >> 16
    return ~total & 0xFFFF


def source_address(dst: str) -> str:
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        probe.connect((dst, 9))
        return probe.getsockname()[0]
    finally:
        probe.close()


def syn_packet(src: str, dst: str, sport: int, dport: int, payload: bytes) -> bytes:
    header = struct.pack("!HHIIBBHHH", sport, dport, random.getrandbits(32), 0, 5 << 4, 0x02, 65535, 0, 0)
    pseudo = socket.inet_aton(src) + socket.inet_aton(dst) + struct.pack("!BBH", 0, socket.IPPROTO_TCP,
                                                                        len(header) + len(payload))
    sum_ = checksum(pseudo + header + payload)
    return header[:16] + struct.pack("!H", sum_) + header[18:] + payload


def icmp_packet(ident: int, seq: int, payload: bytes) -> bytes:
    header = struct.pack("!BBHHH", 8, 0, 0, ident, seq & 0xFFFF)
    return struct.pack("!BBHHH", 8, 0, checksum(header + payload), ident, seq & 0xFFFF) + payload


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dst", required=True)
    parser.add_argument("--subnets", required=True)
    parser.add_argument("--proto", default="udp", choices=("udp", "tcp-syn", "icmp"))
    parser.add_argument("--length", type=int, default=64, help="payload bytes")
    parser.add_argument("--rate", type=float, default=100.0)
    parser.add_argument("--dport", type=int, default=80)
    parser.add_argument("--sport", type=int, default=0)
    parser.add_argument("--duration", type=float, default=0.0)
    parser.add_argument("--dscp", type=int, default=8)
    args = parser.parse_args()
    dst = ipaddress.ip_address(args.dst)
    subnets = [ipaddress.ip_network(s, strict=False) for s in args.subnets.split(",") if s]
    if not any(dst in net for net in subnets):
        sys.exit(f"flooder: {dst} is outside the experiment's subnets ({args.subnets}); refusing to send")
    proto = {"udp": socket.IPPROTO_UDP, "tcp-syn": socket.IPPROTO_TCP, "icmp": socket.IPPROTO_ICMP}[args.proto]
    kind = socket.SOCK_DGRAM if args.proto == "udp" else socket.SOCK_RAW
    sock = socket.socket(socket.AF_INET, kind, proto)
    sock.setsockopt(socket.IPPROTO_IP, socket.IP_TOS, (args.dscp & 0x3F) << 2)
    payload = b"\xa5" * max(0, args.length)
    src = source_address(str(dst))
    stop = Stop()
    gap = 1.0 / args.rate if args.rate > 0 else 0.0
    started = next_send = time.monotonic()
    sent = sent_bytes = 0
    while not stop and not (args.duration and time.monotonic() - started >= args.duration):
        if args.proto == "udp":
            packet = payload
            port = args.dport
        elif args.proto == "tcp-syn":
            packet = syn_packet(src, str(dst), args.sport or random.randint(1024, 65535), args.dport, payload)
            port = 0
        else:
            packet = icmp_packet(0xBEEF, sent, payload)
            port = 0
        try:
            sock.sendto(packet, (str(dst), port))
            sent += 1
            sent_bytes += len(packet)
        except OSError:
            pass                      # full queue or unreachable for a moment: a flood goes on
        if gap:
            next_send += gap
            delay = next_send - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            elif delay < -1.0:
                next_send = time.monotonic()
    record("flooder", {"dst": str(dst), "proto": args.proto, "packets": sent, "bytes": sent_bytes,
                       "seconds": time.monotonic() - started, "dscp": args.dscp}, kind="flooder")


if __name__ == "__main__":
    main()
