import ConfigFile

/// An RRset: the records of one owner, type and class (RFC 2181 §5).
package struct RRset: Sendable, Hashable {
    public var owner: DomainName
    public var type: RecordType
    public var ttl: UInt32
    public var rdatas: [[UInt8]]
}

/// One zone, checked and grouped into RRsets; the input of `SnapshotBuilder`.
public struct Zone: Sendable {
    public let origin: DomainName
    public let file: String
    /// Lower-cased owner → type → RRset.
    package let rrsets: [DomainName: [RecordType: RRset]]
    package let soa: RRset
    /// Every file read for this zone (the zone file and its $INCLUDEs), to notice changes.
    public let files: [String]

    /// SOA serial (RFC 1035 §3.3.13).
    public var serial: UInt32 { soaField(0) }
    /// RFC 2308 §5: negative answers are cached for min(SOA TTL, SOA MINIMUM).
    public var negativeTTL: UInt32 { min(soa.ttl, soaField(4)) }

    private func soaField(_ index: Int) -> UInt32 {
        let rdata = soa.rdatas[0]
        let start = rdata.count - 20 + index * 4
        return rdata[start..<(start + 4)].reduce(0) { $0 << 8 | UInt32($1) }
    }
}

extension Zone {
    /// Whether `next` is a later serial than `previous` in RFC 1982 serial arithmetic (§3.2).
    public static func serialIncreased(from previous: UInt32, to next: UInt32) -> Bool {
        let difference = next &- previous
        return difference != 0 && difference < 0x8000_0000
    }

    /// Zones whose content changed while their SOA serial did not increase. A watcher that
    /// loads such a zone is most likely reading a file being rewritten in place (a truncated
    /// zone keeps its SOA line and loses names, whose NXDOMAINs resolvers would then cache), so
    /// it is refused, one error per zone; an operator's reload (SIGHUP) skips this check.
    public static func unchangedSerials(previous: [Zone], next: [Zone]) -> [ConfigError] {
        var old: [DomainName: Zone] = [:]
        for zone in previous { old[zone.origin] = zone }
        var errors: [ConfigError] = []
        for zone in next {
            guard let before = old[zone.origin], !serialIncreased(from: before.serial, to: zone.serial),
                before.rrsets != zone.rrsets
            else {
                continue
            }
            errors.append(
                ConfigError(
                    file: zone.file, line: 0,
                    message:
                        "zone \(zone.origin) changed but its serial \(zone.serial) did not increase (was \(before.serial));"
                        + " still serving the previous data: raise the serial, or send SIGHUP to load it as it is"))
        }
        return errors
    }
}
