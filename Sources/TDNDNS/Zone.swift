/// An RRset: the records of one owner, type and class (RFC 2181 §5).
public struct RRset: Sendable, Hashable {
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
    public let rrsets: [DomainName: [RecordType: RRset]]
    public let soa: RRset
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
