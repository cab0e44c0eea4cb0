#!/usr/bin/env python3
"""Writes dnsperf -B query files (RFC 1035 §4.2.2 framing): each query carries EDNS and its own
Client Subnet option for a /24 (IPv4) or /56 (IPv6) sampled from Debian's tor-geoipdb ranges.

    bench/make-queries.py --tor /usr/share/tor --steered out/steered.bin --static out/static.bin

Steered queries ask A or AAAA of the demo's model hostnames; static queries ask the names of
bench/queries.txt, with the same ECS options, so both kinds have the same shape on the wire.
"""
import argparse
import ipaddress
import os
import random
import struct

MODELS = ["llama-13b", "mistral-7b", "llama-70b", "eurollm-9b"]


def name_wire(name):
    return b"".join(bytes([len(label)]) + label.encode() for label in name.rstrip(".").split(".")) + b"\x00"


def query(name, qtype, subnet):
    ecs_family = 1 if subnet.version == 4 else 2
    address = subnet.network_address.packed[: (subnet.prefixlen + 7) // 8]
    ecs = struct.pack(">HBB", ecs_family, subnet.prefixlen, 0) + address
    option = struct.pack(">HH", 8, len(ecs)) + ecs
    opt = b"\x00" + struct.pack(">HHIH", 41, 1232, 0, len(option)) + option
    header = struct.pack(">HHHHHH", 0, 0, 1, 0, 0, 1)
    message = header + name_wire(name) + struct.pack(">HH", qtype, 1) + opt
    return struct.pack(">H", len(message)) + message


def ranges(path, version):
    out = []
    with open(path) as handle:
        for line in handle:
            if line.startswith("#") or not line.strip():
                continue
            first, last, code = line.strip().split(",")
            if code in ("??", "A1", "A2", "AP", "EU"):
                continue
            if version == 4:
                out.append((int(first), int(last)))
            else:
                out.append((int(ipaddress.IPv6Address(first)), int(ipaddress.IPv6Address(last))))
    return out


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--tor", default="/usr/share/tor")
    parser.add_argument("--steered", required=True)
    parser.add_argument("--static", required=True)
    parser.add_argument("--count", type=int, default=20000)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    v4 = ranges(os.path.join(args.tor, "geoip"), 4)
    v6 = ranges(os.path.join(args.tor, "geoip6"), 6)
    static_names = [line.split() for line in open(os.path.join(os.path.dirname(__file__), "queries.txt")) if line.strip()]
    types = {"A": 1, "AAAA": 28, "SOA": 6, "NS": 2, "MX": 15, "TXT": 16, "SRV": 33, "HTTPS": 65}
    with open(args.steered, "wb") as steered, open(args.static, "wb") as static:
        for index in range(args.count):
            if rng.random() < 0.8:
                first, last = rng.choice(v4)
                subnet = ipaddress.ip_network((rng.randint(first, last) >> 8 << 8, 24))
            else:
                first, last = rng.choice(v6)
                subnet = ipaddress.ip_network((rng.randint(first, last) >> 72 << 72, 56))
            model = rng.choice(MODELS)
            steered.write(query(f"{model}.tdn.example", 1 if rng.random() < 0.7 else 28, subnet))
            name, qtype = static_names[index % len(static_names)]
            static.write(query(name, types[qtype], subnet))


if __name__ == "__main__":
    main()
