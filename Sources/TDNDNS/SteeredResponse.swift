#if canImport(Glibc)
import Glibc
#endif

/// The steering stage of `Responder`: a model hostname's answer is the one of the client's
/// location class, found in the location tries by the ECS subnet or the sender's address, one
/// query at a time or a UDP batch at once (`locate`).
extension Responder {
    /// What `respond` returns for a query it deferred.
    public static let deferredResult = -1

    /// Writes the steered answer of name `index` for a client at `location`, with the ECS
    /// scope of `ClientSubnet.responseScope`.
    @inline(__always)
    func steer(_ writer: inout ResponseWriter, _ snapshot: Snapshot, _ index: Int, location: SteeringLocation) -> Int {
        let parsed = writer.parsed
        var location = location
        let row = snapshot.row(of: &location)
        let answer = Int(snapshot.classAnswers[Int(snapshot.steeredRows[index]) + row])
        steeredName = index
        steeredRow = row
        writer.scope = ClientSubnet.responseScope(
            sourcePrefix: parsed.sourcePrefix(writer.query), qtype: parsed.qtype, location: location)
        // Each steered answer has three templates: A (and ANY), AAAA, and every other type.
        let qtype = parsed.qtype
        let kind =
            qtype == RecordType.a.rawValue || qtype == RecordType.any.rawValue
            ? 0 : qtype == RecordType.aaaa.rawValue ? 1 : 2
        let template = snapshot.steeredTemplates[Int(snapshot.steeredTemplateStarts[index]) + 3 * answer + kind]
        return writer.answer(snapshot.steeringTemplates, Int(template), queryNameLength: parsed.nameLength)
    }

    /// The address that locates the client: the ECS subnet (its octets present, the rest zero:
    /// RFC 7871 §6), except with a source prefix of 0, which asks not to be located by subnet
    /// (§7.1.2); else the sender's address. Nil when neither is known.
    @inline(__always)
    static func clientAddress(
        _ parsed: ParsedQuery, _ query: UnsafePointer<UInt8>, peer: UnsafeRawPointer?
    )
        -> SteeringLookup?
    {
        if parsed.sourcePrefix(query) > 0 {
            let p = query + parsed.ecsStart
            let isIPv6 = QueryParser.u16(p) == 2
            var bytes: (UInt64, UInt64) = (0, 0)
            let count = min(parsed.ecsLength - 4, isIPv6 ? 16 : 4)
            withUnsafeMutableBytes(of: &bytes) { raw in
                for i in 0..<count { raw[i] = p[4 + i] }
            }
            var high = UInt64(bigEndian: bytes.0)
            let low = UInt64(bigEndian: bytes.1)
            if !isIPv6 { high &= 0xFFFF_FFFF_0000_0000 }
            return SteeringLookup(high: high, low: low, isIPv6: isIPv6)
        }
        guard let peer else { return nil }
        let family = peer.load(as: sa_family_t.self)
        if family == sa_family_t(AF_INET) {
            let (high, low) = addressBits(peer.assumingMemoryBound(to: UInt8.self) + 4, 4)
            return SteeringLookup(high: high, low: low, isIPv6: false)
        }
        if family == sa_family_t(AF_INET6) {
            let (high, low) = addressBits(peer.assumingMemoryBound(to: UInt8.self) + 8, 16)
            return SteeringLookup(high: high, low: low, isIPv6: true)
        }
        return nil
    }

    /// Locates deferred queries together: their trie walks advance in lockstep, so the loads of
    /// different walks are independent and their cache misses overlap instead of queueing.
    public static func locate(
        _ queries: UnsafeMutablePointer<DeferredQuery>, count: Int, snapshot: Snapshot,
        into results: UnsafeMutablePointer<SteeringLocation>
    ) {
        for index in 0..<count {
            queries[index].lookup = queries[index].lookup.normalised
            results[index] = SteeringLocation(classID: 0, scope: -1)
        }
        var pending = count
        while pending > 0 {
            for index in 0..<count where results[index].scope < 0 {
                let lookup = queries[index].lookup
                let trie = lookup.trie(snapshot)
                if let (classID, depth) = Snapshot.step(
                    trie, node: lookup.node, depth: lookup.depth, high: lookup.high, low: lookup.low, bits: lookup.bits)
                {
                    results[index] = lookup.location(classID, depth: depth)
                    pending -= 1
                } else {
                    queries[index].lookup.node = Int(
                        trie[16 * lookup.node + Snapshot.nibble(lookup.high, lookup.low, lookup.depth)])
                    queries[index].lookup.depth += 4
                }
            }
        }
    }

    @inline(__always)
    static func embedsIPv4(_ high: UInt64, _ low: UInt64) -> Bool {
        (high == 0 && low >> 32 == 0xFFFF) || (high == 0x0064_FF9B_0000_0000 && low >> 32 == 0)
    }

    /// Address bytes as the two big-endian halves the tries read (IPv4 in the top 32 bits).
    @inline(__always)
    static func addressBits(_ p: UnsafePointer<UInt8>, _ count: Int) -> (UInt64, UInt64) {
        var high: UInt64 = 0
        var low: UInt64 = 0
        for i in 0..<min(count, 8) { high = high << 8 | UInt64(p[i]) }
        if count == 4 { return (high << 32, 0) }
        for i in 8..<16 { low = low << 8 | UInt64(p[i]) }
        return (high, low)
    }

    /// One client's location (`locate` is the batched form).
    @inline(__always)
    static func classify(_ snapshot: Snapshot, _ address: SteeringLookup) -> SteeringLocation {
        let lookup = address.normalised
        let (classID, depth) = Snapshot.classify(
            lookup.trie(snapshot), high: lookup.high, low: lookup.low, bits: lookup.bits)
        return lookup.location(classID, depth: depth)
    }
}

/// A steered query waiting for its client's location (`Responder.locate`): what the parser
/// read and the name, so that its second pass only writes.
package struct DeferredQuery: Sendable {
    var parsed: ParsedQuery
    var steeredName: Int32
    var lookup: SteeringLookup

    public init() { self.init(parsed: ParsedQuery(), steeredName: 0, lookup: SteeringLookup()) }
    init(parsed: ParsedQuery, steeredName: Int32, lookup: SteeringLookup) {
        self.parsed = parsed
        self.steeredName = steeredName
        self.lookup = lookup
    }
}

/// A client address on its way through a location trie.
package struct SteeringLookup: Sendable {
    var high: UInt64
    var low: UInt64
    var isIPv6: Bool
    /// An IPv4 client carried in IPv6 (walks the IPv4 trie; its scope counts IPv6 bits).
    var embeddedIPv4 = false
    var node = 0
    var depth = 0

    init(high: UInt64, low: UInt64, isIPv6: Bool) {
        self.high = high
        self.low = low
        self.isIPv6 = isIPv6
    }

    /// Ready to walk from the root. IPv4-mapped (::ffff:0:0/96) and NAT64 (64:ff9b::/96)
    /// addresses are IPv4 clients: they walk the IPv4 trie.
    var normalised: SteeringLookup {
        var lookup = self
        if isIPv6 && Responder.embedsIPv4(high, low) {
            lookup = SteeringLookup(high: low << 32, low: 0, isIPv6: false)
            lookup.embeddedIPv4 = true
        }
        lookup.node = 0
        lookup.depth = 0
        return lookup
    }

    var bits: Int { isIPv6 ? 128 : 32 }

    func trie(_ snapshot: Snapshot) -> UnsafeMutableBufferPointer<UInt32> { isIPv6 ? snapshot.trie6 : snapshot.trie4 }

    /// The scope of a leaf at `depth` (`ClientSubnet.locationScope`).
    func scope(_ depth: Int) -> Int { ClientSubnet.locationScope(leafDepth: depth, embeddedIPv4: embeddedIPv4) }

    /// The location found at a leaf of class `classID` at `depth`, with this address's shard.
    @inline(__always)
    func location(_ classID: Int32, depth: Int) -> SteeringLocation {
        let shardScope =
            isIPv6 ? SteeringTable.shardPrefix.ipv6 : SteeringTable.shardPrefix.ipv4 + (embeddedIPv4 ? 96 : 0)
        return SteeringLocation(
            classID: classID, scope: scope(depth), shard: UInt8(SteeringTable.shard(high: high, isIPv6: isIPv6)),
            shardScope: UInt8(shardScope))
    }

    public init() { self.init(high: 0, low: 0, isIPv6: false) }
}

/// A located client: its answer class and the prefix over which that holds
/// (`ClientSubnet.locationScope`), its shard (`SteeringTable.shard`), and the scope of a
/// shard (for classes answered per shard).
package struct SteeringLocation: Sendable {
    var classID: Int32
    var scope: Int
    var shard: UInt8 = 0
    var shardScope: UInt8 = 0

    public init() { self.init(classID: 0, scope: 0) }
    init(classID: Int32, scope: Int, shard: UInt8 = 0, shardScope: UInt8 = 0) {
        self.classID = classID
        self.scope = scope
        self.shard = shard
        self.shardScope = shardScope
    }
}
