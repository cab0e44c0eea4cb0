"""A small MaxMind DB (MMDB format 2.0) writer: enough for country/city-shaped databases that
libmaxminddb reads. No dependencies beyond the standard library.

Spec: https://maxmind.github.io/MaxMind-DB/ — a binary search tree over address bits (here an
IPv6 tree, with IPv4 at ::/96 as MaxMind's own databases have it), a data section of typed
values, and a metadata map after b"\\xab\\xcd\\xefMaxMind.com".
"""
import ipaddress
import struct
import time


class U16(int):
    """An unsigned integer that must be encoded with this exact MMDB type."""


class U32(int):
    pass


class U64(int):
    pass


class _Encoder:
    def __init__(self):
        self.data = bytearray()
        self.cache = {}

    @staticmethod
    def _control(type_code, size):
        if type_code <= 7:
            first, extended = type_code << 5, b""
        else:
            first, extended = 0, bytes([type_code - 7])
        if size < 29:
            return bytes([first | size]) + extended
        if size < 29 + 256:
            return bytes([first | 29]) + extended + bytes([size - 29])
        if size < 285 + 65536:
            return bytes([first | 30]) + extended + struct.pack(">H", size - 285)
        return bytes([first | 31]) + extended + struct.pack(">I", size - 65821)[1:]

    def encode(self, value):
        if isinstance(value, bool):
            return self._control(14, 1 if value else 0)
        if isinstance(value, str):
            raw = value.encode()
            return self._control(2, len(raw)) + raw
        if isinstance(value, float):
            return self._control(3, 8) + struct.pack(">d", value)
        if isinstance(value, int):
            if value < 0:
                return self._control(8, 4) + struct.pack(">i", value)
            raw = value.to_bytes((value.bit_length() + 7) // 8, "big") if value else b""
            if isinstance(value, U16):
                type_code = 5
            elif isinstance(value, U32):
                type_code = 6
            elif isinstance(value, U64):
                type_code = 9
            else:
                type_code = 5 if value < 1 << 16 else 6 if value < 1 << 32 else 9
            return self._control(type_code, len(raw)) + raw
        if isinstance(value, dict):
            out = self._control(7, len(value))
            for key, item in value.items():
                out += self.encode(str(key)) + self.encode(item)
            return out
        if isinstance(value, (list, tuple)):
            out = self._control(11, len(value))
            for item in value:
                out += self.encode(item)
            return out
        raise TypeError(f"cannot encode {type(value)}")

    def store(self, value):
        """Appends a record to the data section once; returns its offset."""
        key = repr(value)
        if key not in self.cache:
            self.cache[key] = len(self.data)
            self.data += self.encode(value)
        return self.cache[key]


class Writer:
    """Insert networks with their records, then write(). Later inserts override earlier ones
    where they overlap."""

    def __init__(self, database_type="GeoLite2-Country", description="TDN DNS test database"):
        self.database_type = database_type
        self.description = description
        self.encoder = _Encoder()
        # Each node is [left, right]; a child is None (empty), ("n", index) or ("d", offset).
        self.nodes = [[None, None]]

    def insert(self, network, record):
        net = ipaddress.ip_network(network, strict=False)
        bits = int(net.network_address)
        length = net.prefixlen
        if net.version == 4:
            length += 96  # IPv4 lives at ::/96 in an IPv6 tree
        offset = self.encoder.store(record)
        node = 0
        for depth in range(length):
            if net.version == 6:
                bit = (bits >> (127 - depth)) & 1
            else:
                bit = (bits >> (127 - depth)) & 1 if depth >= 96 else 0
            if depth == length - 1:
                self.nodes[node][bit] = ("d", offset)
                return
            child = self.nodes[node][bit]
            if child is None or child[0] == "d":
                self.nodes.append([child, child])
                index = len(self.nodes) - 1
                self.nodes[node][bit] = ("n", index)
                child = ("n", index)
            node = child[1]

    def write(self, path):
        # Renumber reachable nodes breadth-first (dropped subtrees vanish).
        order, numbering = [0], {0: 0}
        position = 0
        while position < len(order):
            for child in self.nodes[order[position]]:
                if child is not None and child[0] == "n" and child[1] not in numbering:
                    numbering[child[1]] = len(order)
                    order.append(child[1])
            position += 1
        count = len(order)

        def record(child):
            if child is None:
                return count
            if child[0] == "n":
                return numbering[child[1]]
            return count + 16 + child[1]

        tree = bytearray()
        for index in order:
            left, right = self.nodes[index]
            tree += struct.pack(">II", record(left), record(right))
        metadata = self.encoder.encode({
            "node_count": U32(count),
            "record_size": U16(32),
            "ip_version": U16(6),
            "database_type": self.database_type,
            "languages": ["en"],
            "binary_format_major_version": U16(2),
            "binary_format_minor_version": U16(0),
            "build_epoch": U64(int(time.time())),
            "description": {"en": self.description},
        })
        with open(path, "wb") as out:
            out.write(tree)
            out.write(b"\x00" * 16)
            out.write(self.encoder.data)
            out.write(b"\xab\xcd\xefMaxMind.com")
            out.write(metadata)


def country_record(code, continent=None, latitude=None, longitude=None, name=None):
    """A record in the GeoLite2 layout (country, continent, location)."""
    record = {"country": {"iso_code": code}}
    if name:
        record["country"]["names"] = {"en": name}
    if continent:
        record["continent"] = {"code": continent}
    if latitude is not None and longitude is not None:
        record["location"] = {"latitude": float(latitude), "longitude": float(longitude)}
    return record
