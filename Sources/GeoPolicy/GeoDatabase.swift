import CMaxMindDB
import ConfigFile

#if canImport(Glibc)
import Glibc
#endif

/// A MaxMind-format database (GeoIP2/GeoLite2 City or Country, DB-IP lite, or one built by
/// `scripts/build-geoip.py` from Debian's tor-geoipdb), opened read-only with mmap through libmaxminddb.
public final class GeoDatabase: @unchecked Sendable {
    public let path: String
    public let databaseType: String
    public let ipVersion: Int
    /// The open database, at an address of its own: libmaxminddb keeps pointers to it in every
    /// entry it returns, so it must never move (`&` of a stored property may pass a temporary),
    /// and lookups from several threads read it at once (read-only, as libmaxminddb allows).
    private let mmdb: UnsafeMutablePointer<MMDB_s>
    private var isOpen = false

    public init(path: String) throws(ConfigErrors) {
        self.path = path
        mmdb = .allocate(capacity: 1)
        mmdb.initialize(to: MMDB_s())
        let status = MMDB_open(path, UInt32(MMDB_MODE_MMAP), mmdb)
        isOpen = status == MMDB_SUCCESS
        guard status == MMDB_SUCCESS else {
            // Not fully initialized: no deinit will run.
            mmdb.deallocate()
            throw ConfigErrors([
                ConfigError(
                    file: path, line: 0,
                    message: "cannot open the geo database: \(String(cString: MMDB_strerror(status)))")
            ])
        }
        databaseType = String(cString: mmdb.pointee.metadata.database_type)
        ipVersion = Int(mmdb.pointee.metadata.ip_version)
        // Check at load what the query path relies on: country codes in the records.
        var sample: Location? = nil
        for probe in ["8.8.8.8", "1.1.1.1", "5.9.1.1", "133.1.1.1", "2001:4860::1", "192.0.2.1", "198.51.100.1"] {
            if let found = lookup(IPPrefix.parseAddress(probe)!).location, found.country != nil {
                sample = found
                break
            }
        }
        let type = databaseType.lowercased()
        guard sample != nil || type.contains("country") || type.contains("city") else {
            throw ConfigErrors([
                ConfigError(
                    file: path, line: 0,
                    message:
                        "database type '\(databaseType)' has no country records: expected a GeoIP2/GeoLite2 City or Country layout"
                )
            ])
        }
    }

    deinit {
        if isOpen { MMDB_close(mmdb) }
        mmdb.deallocate()
    }

    /// The location of an address (4 or 16 octets) and the prefix length of the database
    /// network that matched (for IPv4 in an IPv6 database, in IPv4 bits).
    public func lookup(_ address: [UInt8]) -> (location: Location?, prefixLength: Int) {
        var storage = sockaddr_storage()
        let isIPv4 = address.count == 4
        withUnsafeMutableBytes(of: &storage) { raw in
            if isIPv4 {
                var v4 = sockaddr_in()
                v4.sin_family = sa_family_t(AF_INET)
                withUnsafeMutableBytes(of: &v4.sin_addr) { $0.copyBytes(from: address) }
                withUnsafeBytes(of: v4) { raw.copyMemory(from: $0) }
            } else {
                var v6 = sockaddr_in6()
                v6.sin6_family = sa_family_t(AF_INET6)
                withUnsafeMutableBytes(of: &v6.sin6_addr) { $0.copyBytes(from: address) }
                withUnsafeBytes(of: v6) { raw.copyMemory(from: $0) }
            }
        }
        var error: Int32 = 0
        var result = withUnsafePointer(to: &storage) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { MMDB_lookup_sockaddr(mmdb, $0, &error) }
        }
        var prefix = Int(result.netmask)
        if isIPv4 && ipVersion == 6 { prefix = max(0, prefix - 96) }
        guard error == MMDB_SUCCESS, result.found_entry else { return (nil, prefix) }
        return (location(&result.entry), prefix)
    }

    /// Reads country, continent and coordinates from a record (City and Country layouts; the
    /// registered country stands in where the country is missing).
    func location(_ entry: inout MMDB_entry_s) -> Location? {
        let country = string(&entry, ["country", "iso_code"]) ?? string(&entry, ["registered_country", "iso_code"])
        guard let country else { return nil }
        var location = Location(country: country, continent: string(&entry, ["continent", "code"]))
        if let lat = double(&entry, ["location", "latitude"]), let lon = double(&entry, ["location", "longitude"]) {
            location.coordinates = Coordinates(latitude: lat, longitude: lon)
        }
        return location
    }

    private func value(_ entry: inout MMDB_entry_s, _ path: [String]) -> MMDB_entry_data_s? {
        var data = MMDB_entry_data_s()
        let pointers = path.map { strdup($0) } + [nil]
        defer { for pointer in pointers { free(pointer) } }
        let status = pointers.map { UnsafePointer($0) }.withUnsafeBufferPointer {
            MMDB_aget_value(&entry, &data, $0.baseAddress)
        }
        return status == MMDB_SUCCESS && data.has_data ? data : nil
    }

    private func string(_ entry: inout MMDB_entry_s, _ path: [String]) -> String? {
        guard let data = value(&entry, path), data.type == UInt32(MMDB_DATA_TYPE_UTF8_STRING),
            let start = data.utf8_string
        else { return nil }
        // Not NUL-terminated: exactly data_size bytes.
        return String(decoding: UnsafeRawBufferPointer(start: start, count: Int(data.data_size)), as: UTF8.self)
    }

    private func double(_ entry: inout MMDB_entry_s, _ path: [String]) -> Double? {
        guard let data = value(&entry, path) else { return nil }
        if data.type == UInt32(MMDB_DATA_TYPE_DOUBLE) { return data.double_value }
        if data.type == UInt32(MMDB_DATA_TYPE_FLOAT) { return Double(data.float_value) }
        return nil
    }

    /// Every network of the database with its location, IPv4 and IPv6 apart. IPv4 networks of
    /// an IPv6 database are read once, from the IPv4 subtree (its aliases are not walked again).
    public func networks(
        _ locate: (Location?) -> Int32, v4: inout [(UInt32, UInt8, Int32)], v6: inout [(UInt64, UInt64, UInt8, Int32)]
    ) {
        var classOfEntry: [UInt32: Int32] = [:]
        let nodeCount = UInt64(mmdb.pointee.metadata.node_count)
        func classify(_ entry: MMDB_entry_s) -> Int32 {
            if let known = classOfEntry[entry.offset] { return known }
            var copy = entry
            let id = locate(location(&copy))
            classOfEntry[entry.offset] = id
            return id
        }
        let ipv4Start = UInt64(mmdb.pointee.ipv4_start_node.node_value)
        // Explicit stack: (node, depth, high 64 bits, low 64 bits).
        func walk(root: UInt64, bits: Int, emit: (UInt64, UInt64, Int, Int32) -> Void, skipIPv4: Bool) {
            var stack: [(UInt64, Int, UInt64, UInt64)] = [(root, 0, 0, 0)]
            while let (node, depth, high, low) = stack.popLast() {
                var record = MMDB_search_node_s()
                guard MMDB_read_node(mmdb, UInt32(node), &record) == MMDB_SUCCESS else { continue }
                for side in 0..<2 {
                    let childDepth = depth + 1
                    var childHigh = high
                    var childLow = low
                    if side == 1 {
                        let bit = bits - childDepth
                        if bit >= 64 { childHigh |= 1 << UInt64(bit - 64) } else { childLow |= 1 << UInt64(bit) }
                    }
                    let type = side == 0 ? record.left_record_type : record.right_record_type
                    let value = side == 0 ? record.left_record : record.right_record
                    switch Int32(type) {
                    case MMDB_RECORD_TYPE_SEARCH_NODE:
                        if skipIPv4 && value == ipv4Start { continue }
                        if value < nodeCount && childDepth < bits {
                            stack.append((value, childDepth, childHigh, childLow))
                        }
                    case MMDB_RECORD_TYPE_DATA:
                        emit(
                            childHigh, childLow, childDepth,
                            classify(side == 0 ? record.left_record_entry : record.right_record_entry))
                    default:
                        break
                    }
                }
            }
        }
        if ipVersion == 4 {
            walk(
                root: 0, bits: 32,
                emit: { _, low, depth, id in v4.append((UInt32(truncatingIfNeeded: low), UInt8(depth), id)) },
                skipIPv4: false)
        } else {
            if mmdb.pointee.ipv4_start_node.netmask == 96 {
                walk(
                    root: ipv4Start, bits: 32,
                    emit: { _, low, depth, id in v4.append((UInt32(truncatingIfNeeded: low), UInt8(depth), id)) },
                    skipIPv4: false)
            }
            walk(
                root: 0, bits: 128, emit: { high, low, depth, id in v6.append((high, low, UInt8(depth), id)) },
                skipIPv4: true)
        }
    }
}
