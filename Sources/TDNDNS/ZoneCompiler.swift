import ConfigFile

#if canImport(Glibc)
import Glibc
#endif

/// Loads every `*.zone` file of a directory and checks it; nothing is returned unless every
/// zone is sound, so a bad file can never replace good data.
public enum ZoneCompiler {
    /// The zone files of `directory` (not its subdirectories), sorted.
    public static func zoneFiles(in directory: String) -> [String]? {
        guard let handle = opendir(directory) else { return nil }
        defer { closedir(handle) }
        var names: [String] = []
        while let entry = readdir(handle) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { raw in
                String(decoding: raw.prefix(while: { $0 != 0 }), as: UTF8.self)
            }
            if name.hasSuffix(".zone") && !name.hasPrefix(".") { names.append(name) }
        }
        return names.sorted()
    }

    /// Reads and checks all zones of `directory`. The zone's name is the file name without
    /// `.zone` (`tdn.example.zone` → `tdn.example.`), which is also the initial `$ORIGIN`.
    public static func load(directory: String) -> Result<[Zone], ConfigErrors> {
        guard let files = zoneFiles(in: directory) else {
            return .failure(
                ConfigErrors([ConfigError(file: directory, line: 0, message: "cannot read the zones directory")]))
        }
        var zones: [Zone] = []
        var errors: [ConfigError] = []
        for file in files {
            let path = directory.hasSuffix("/") ? directory + file : directory + "/" + file
            switch load(path: path, zoneName: String(file.dropLast(5))) {
            case .success(let zone):
                if let clash = zones.first(where: { $0.origin == zone.origin }) {
                    errors.append(
                        ConfigError(
                            file: path, line: 0, message: "zone \(zone.origin) is also loaded from \(clash.file)"))
                } else {
                    zones.append(zone)
                }
            case .failure(let failure):
                errors += failure.errors
            }
        }
        return errors.isEmpty ? .success(zones) : .failure(ConfigErrors(errors))
    }

    /// Reads and checks one zone file.
    public static func load(path: String, zoneName: String) -> Result<Zone, ConfigErrors> {
        let origin: DomainName
        do { origin = try DomainName(zoneName.hasSuffix(".") ? zoneName : zoneName + ".") } catch {
            return .failure(
                ConfigErrors([
                    ConfigError(file: path, line: 0, message: "file name is not a zone name: \(error.message)")
                ]))
        }
        let reader = ZoneFileReader.read(path: path, origin: origin)
        var errors = reader.errors
        let zone = check(reader.records, origin: origin, file: path, files: reader.files, errors: &errors)
        if let zone, errors.isEmpty { return .success(zone) }
        return .failure(ConfigErrors(errors))
    }

    static func check(
        _ records: [ZoneRecord], origin: DomainName, file: String, files: [String], errors: inout [ConfigError]
    ) -> Zone? {
        var rrsets: [DomainName: [RecordType: RRset]] = [:]
        var firstLine: [DomainName: [RecordType: (file: String, line: Int)]] = [:]
        func report(_ at: ZoneRecord, _ message: String) {
            errors.append(ConfigError(file: at.file, line: at.line, message: message))
        }
        for item in records {
            let record = item.record
            guard record.name.isSubdomain(of: origin) else {
                report(item, "out-of-zone data: \(record.name) is not in zone \(origin)")
                continue
            }
            let key = record.name.lowercased
            if record.type == .soa && key != origin.lowercased {
                report(item, "SOA record at \(record.name), not at the zone apex \(origin)")
                continue
            }
            var types = rrsets[key] ?? [:]
            let isCNAME = record.type == .cname
            let others = types.keys.filter { !Self.mayStandBesideCNAME($0) && $0 != .cname }
            if isCNAME, types[.cname] != nil, types[.cname]?.rdatas.contains(record.rdata) == false {
                report(item, "more than one CNAME at \(record.name)")
                continue
            }
            if isCNAME && !others.isEmpty || !isCNAME && types[.cname] != nil && !Self.mayStandBesideCNAME(record.type)
            {
                report(item, "CNAME and other data at \(record.name)")
                continue
            }
            if record.type == .soa, types[.soa] != nil {
                report(item, "more than one SOA record at the apex \(origin)")
                continue
            }
            if var set = types[record.type] {
                // RFC 2181 §5: an RRset has one TTL and no duplicate records.
                set.ttl = min(set.ttl, record.ttl)
                if !set.rdatas.contains(record.rdata) { set.rdatas.append(record.rdata) }
                types[record.type] = set
            } else {
                types[record.type] = RRset(
                    owner: record.name, type: record.type, ttl: record.ttl, rdatas: [record.rdata])
                firstLine[key, default: [:]][record.type] = (item.file, item.line)
            }
            rrsets[key] = types
        }
        let apex = origin.lowercased
        guard let soa = rrsets[apex]?[.soa] else {
            errors.append(ConfigError(file: file, line: 0, message: "no SOA record at the zone apex \(origin)"))
            return nil
        }
        if rrsets[apex]?[.ns] == nil {
            let line = firstLine[apex]?[.soa]?.line ?? 0
            errors.append(ConfigError(file: file, line: line, message: "no NS records at the zone apex \(origin)"))
        }
        for (owner, types) in rrsets {
            for (type, set) in types where set.rdatas.reduce(0, { $0 + $1.count + 12 + set.owner.wire.count }) > 60_000
            {
                let at = firstLine[owner]?[type] ?? (file, 0)
                errors.append(
                    ConfigError(
                        file: at.file, line: at.line,
                        message: "\(type) RRset at \(set.owner) is too large for a DNS message"))
            }
        }
        // Every in-zone name server needs an address in the zone, or nobody can reach it.
        for (owner, types) in rrsets {
            guard let ns = types[.ns] else { continue }
            let at = firstLine[owner]?[.ns] ?? (file, 0)
            for rdata in ns.rdatas {
                guard let target = try? DomainName(wire: rdata), target.isSubdomain(of: origin) else { continue }
                let targetTypes = rrsets[target.lowercased] ?? [:]
                if targetTypes[.a] == nil && targetTypes[.aaaa] == nil {
                    let kind = owner == apex ? "name server" : "delegation to"
                    errors.append(
                        ConfigError(
                            file: at.file, line: at.line,
                            message:
                                "\(kind) \(target) at \(ns.owner) has no A or AAAA record in the zone (missing glue)"))
                }
            }
        }
        return Zone(origin: origin, file: file, rrsets: rrsets, soa: soa, files: files)
    }

    /// DNSSEC records may share a name with a CNAME (RFC 2181 §10.1, RFC 4035 §2.5).
    static func mayStandBesideCNAME(_ type: RecordType) -> Bool {
        type == .rrsig || type == .nsec || type == RecordType(50)
    }
}
