#!/usr/bin/env python3
"""The driver of bench/scale.sh (see there). Loopback only; every process it starts is stopped."""
import argparse
import math
import os
import random
import re
import socket
import struct
import subprocess
import sys
import threading
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
MODEL = "mistral-7b.tdn.example"
TOKEN = "bench-admin-token-0123456789"


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def tcp_listener():
    """Accepts and closes connections: every TCP probe succeeds."""
    server = socket.socket()
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind(("127.0.0.1", 0))
    server.listen(4096)

    def serve():
        while True:
            try:
                connection, _ = server.accept()
                connection.close()
            except OSError:
                return

    threading.Thread(target=serve, daemon=True).start()
    return server


def dns_query(name, subnet):
    """A query for A with an ECS option for the /24 `subnet` (a.b.c.0/24)."""
    ident = random.randrange(65536)
    header = struct.pack(">HHHHHH", ident, 0, 1, 0, 0, 1)
    question = b"".join(bytes([len(label)]) + label.encode() for label in name.split(".")) + b"\0"
    question += struct.pack(">HH", 1, 1)
    address = bytes(int(part) for part in subnet.split("/")[0].split("."))[:3]
    option = struct.pack(">HBB", 1, 24, 0) + address
    opt = b"\0" + struct.pack(">HHIH", 41, 1232, 0, 4 + len(option)) + struct.pack(">HH", 8, len(option)) + option
    return ident, header + question + opt


def skip_name(packet, position):
    while True:
        length = packet[position]
        if length == 0:
            return position + 1
        if length & 0xC0 == 0xC0:
            return position + 2
        position += 1 + length


def a_records(packet):
    count = struct.unpack(">H", packet[6:8])[0]
    position = skip_name(packet, 12) + 4
    found = set()
    for _ in range(count):
        position = skip_name(packet, position)
        rtype, _class, _ttl, length = struct.unpack(">HHIH", packet[position:position + 10])
        position += 10
        if rtype == 1 and length == 4:
            found.add(".".join(str(byte) for byte in packet[position:position + 4]))
        position += length
    return found


class Resolver:
    def __init__(self, port):
        self.port = port
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.settimeout(0.5)

    def addresses(self, subnet):
        ident, packet = dns_query(MODEL, subnet)
        self.sock.sendto(packet, ("127.0.0.1", self.port))
        while True:
            try:
                answer, _ = self.sock.recvfrom(4096)
            except socket.timeout:
                return None
            if struct.unpack(">H", answer[:2])[0] == ident:
                return a_records(answer)


def metric(status_port, name):
    text = urllib.request.urlopen(f"http://127.0.0.1:{status_port}/metrics", timeout=10).read().decode()
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            total += float(line.rsplit(" ", 1)[1])
    return total


def force(status_port, site, state):
    """`tdnd force`'s request; several sites (a list) go in one request, one re-steering."""
    if isinstance(site, list):
        url = f"http://127.0.0.1:{status_port}/admin/force?state={state}&sites={','.join(site)}"
    else:
        url = f"http://127.0.0.1:{status_port}/admin/sites/{site}/force?state={state}"
    request = urllib.request.Request(url, method="POST", headers={"Authorization": f"Bearer {TOKEN}"})
    urllib.request.urlopen(request, timeout=60).read()


def settle(status_port, size):
    """Waits until every site is up and the steering rebuilds have stopped for 3 s."""
    deadline = time.monotonic() + 600
    while metric(status_port, "tdn_site_up") < size and time.monotonic() < deadline:
        time.sleep(0.5)
    while time.monotonic() < deadline:
        before = metric(status_port, "tdn_steering_rebuilds_total")
        time.sleep(3)
        if metric(status_port, "tdn_steering_rebuilds_total") == before:
            break


def percentile(values, fraction):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, math.ceil(fraction * len(ordered)) - 1)]


def distance(a, b):
    lat1, lon1, lat2, lon2 = map(math.radians, (a[0], a[1], b[0], b[1]))
    h = math.sin((lat2 - lat1) / 2) ** 2 + math.cos(lat1) * math.cos(lat2) * math.sin((lon2 - lon1) / 2) ** 2
    return 2 * 6371 * math.asin(min(1, math.sqrt(h)))


def run_size(args, size):
    directory = os.path.join(args.work, f"s{size}")
    listener = tcp_listener()
    dns_port, status_port = free_port(), free_port()
    subprocess.run([sys.executable, os.path.join(HERE, "gen-scale.py"), "--sites", str(size), "--out", directory,
                    "--geoip", args.city, "--probe", f"127.0.0.1:{listener.getsockname()[1]}",
                    "--dns-port", str(dns_port), "--status-port", str(status_port)], check=True)
    # Full compile: `tdnd check` compiles exactly what `serve` loads.
    timed = subprocess.run(["/usr/bin/time", "-f", "TIME %e %M", args.tdnd, "check", "--config", "tdnd.yaml"],
                           cwd=directory, capture_output=True, text=True)
    if timed.returncode != 0:
        sys.exit(f"scale: tdnd check failed for {size} sites:\n{timed.stdout}{timed.stderr}")
    wall, rss = re.search(r"TIME ([\d.]+) (\d+)", timed.stderr).groups()
    classes = re.search(r"(\d+) location classes", timed.stdout).group(1)
    row = {"sites": size, "classes": int(classes), "compile": float(wall), "rss": int(rss) // 1024}

    log = open(os.path.join(directory, "serve.log"), "w")
    server = subprocess.Popen([args.tdnd, "serve", "--config", "tdnd.yaml"], cwd=directory, stdout=log,
                              stderr=subprocess.STDOUT)
    try:
        resolver = Resolver(dns_port)
        samples = [line.strip().split(",") for line in open(os.path.join(directory, "samples.csv"))]
        deadline = time.monotonic() + 600
        while resolver.addresses(samples[0][1]) is None:
            if server.poll() is not None or time.monotonic() > deadline:
                sys.exit(f"scale: tdnd serve did not answer (see {directory}/serve.log)")
            time.sleep(0.5)
        sites = [line.strip().split(",") for line in open(os.path.join(directory, "sites.csv"))]
        site_of = {s[3]: s[0] for s in sites}
        # Steady state: every probe has succeeded once and the rebuilds have settled.
        settle(status_port, size)
        # Each change takes down a site that a sample client is answered with right now.
        chosen, taken = [], set()
        for _, subnet, _ in samples:
            answered = sorted(resolver.addresses(subnet) or set())
            if answered and site_of.get(answered[0]) not in taken:
                taken.add(site_of[answered[0]])
                chosen.append((site_of[answered[0]], subnet, answered[0]))
        random.Random(1).shuffle(chosen)
        latencies, cpu = [], []
        for site, subnet, address in chosen[:args.changes]:
            cpu_before = metric(status_port, "tdn_steering_rebuild_cpu_seconds_total")
            start = time.monotonic()
            force(status_port, site, "down")
            while address in (resolver.addresses(subnet) or {address}):
                if time.monotonic() - start > 30:
                    sys.exit(f"scale: {site} still answered 30 s after force down")
                time.sleep(0.002)
            latencies.append(time.monotonic() - start)
            time.sleep(0.3)
            cpu.append(metric(status_port, "tdn_steering_rebuild_cpu_seconds_total") - cpu_before)
        row.update(p50=percentile(latencies, 0.5), p99=percentile(latencies, 0.99), cpu=sum(cpu) / len(cpu),
                   changes=len(latencies))
        print(f"scale: {size} sites: compile {row['compile']} s, {row['rss']} MB; changes (s) "
              + " ".join(f"{x:.3f}" for x in latencies) + "; rebuild CPU (s) " + " ".join(f"{x:.3f}" for x in cpu),
              file=sys.stderr, flush=True)
        for site, _, _ in chosen[:args.changes]:
            force(status_port, site, "auto")
        # The burst starts from the steady state again (the sites back up, their rebuilds done).
        settle(status_port, size)

        # A region fails: the BURST sites nearest to a sample client's answer go down at once;
        # every sample client answered with one of them is watched until none is in its answer.
        position = {s[0]: (float(s[1]), float(s[2])) for s in sites}
        center = position[chosen[0][0]]
        count = args.burst or size // 20
        burst = sorted(sites, key=lambda s: distance(center, (float(s[1]), float(s[2]))))[:count]
        gone = {s[3] for s in burst}
        clients = [s for s in samples if (resolver.addresses(s[1]) or set()) & gone]
        start = time.monotonic()
        force(status_port, [s[0] for s in burst], "down")
        # The force returns once the new answers are served; then every watched client must be
        # off the burst's sites, except those whose every eligible site is down (the policy's
        # when-all-down: last-known-good answers them with the sites that were up last).
        settled = time.monotonic() - start
        still = []
        while time.monotonic() - start < settled + 5:
            still = [c for c in clients if (resolver.addresses(c[1]) or gone) & gone]
            if not still:
                break
            time.sleep(0.005)
        row.update(burst=time.monotonic() - start if not still else settled, burst_clients=len(clients),
                   burst_still=len(still))
    finally:
        server.terminate()
        server.wait(timeout=30)
        listener.close()
    return row


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--tdnd", required=True)
    parser.add_argument("--city", required=True)
    parser.add_argument("--work", required=True)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--changes", type=int, default=25)
    parser.add_argument("--burst", type=int, default=0, help="sites in the burst (default: 5 % of them)")
    args = parser.parse_args()
    rows = [run_size(args, size) for size in args.sizes]
    print("| sites | location classes (City) | full compile | peak RSS | change → answer p50 | p99 "
          "| rebuild CPU per change | burst of 5 % of the sites down → answers |")
    print("|---|---|---|---|---|---|---|---|")
    for row in rows:
        print(f"| {row['sites']:,} | {row['classes']:,} | {row['compile']:.1f} s | {row['rss']:,} MB "
              f"| {row['p50'] * 1000:.0f} ms | {row['p99'] * 1000:.0f} ms | {row['cpu']:.3f} s "
              f"| {row['burst']:.2f} s ({row['burst_clients'] - row['burst_still']} of {row['burst_clients']} clients moved; the rest have no eligible site left) |")
    print(f"({rows[0]['changes']} single-site changes per size; latency = force request sent → first DNS "
          "answer without the site, polled every 2 ms)")


if __name__ == "__main__":
    main()
