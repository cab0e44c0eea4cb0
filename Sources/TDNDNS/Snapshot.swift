import Atomics

/// A precompiled response fragment: the answer, authority and additional sections that follow
/// the question. It was encoded for a question of `baseLength` octets; a query whose name is
/// longer (a name below a wildcard, a delegation or an NXDOMAIN apex) shifts every compression
/// pointer listed in the relocations by the difference, because the base name is a suffix of
/// the query name and everything after the question moves by the same amount.
struct Template {
    var bodyStart: UInt32
    var bodyLength: UInt16
    /// Length without the additional section, for when the whole body does not fit.
    var minimalLength: UInt16
    var relocationStart: UInt32
    var relocationCount: UInt16
    var minimalRelocationCount: UInt16
    var answerCount: UInt16
    var authorityCount: UInt16
    var additionalCount: UInt16
    var baseLength: UInt16
    var rcode: UInt8
    var authoritative: Bool
    /// A referral may not drop its glue silently (RFC 9471): TC instead.
    var isReferral: Bool
}

/// A name's answers by query type: `count` (type, template) pairs from `start` in the
/// snapshot's `typeKeys`/`typeTemplates`, the template for any other type (NODATA, or the end
/// of a CNAME chain) and the one for ANY.
struct TypeAnswers {
    var start: UInt32
    var count: UInt16
    var fallback: Int32
    var any: Int32

    static let none = TypeAnswers(start: 0, count: 0, fallback: -1, any: -1)

    @inline(__always)
    func template(for qtype: UInt16, in snapshot: Snapshot) -> Int32 {
        if qtype == RecordType.any.rawValue { return any }
        var index = Int(start)
        let end = index + Int(count)
        while index < end {
            if snapshot.typeKeys[index] == qtype { return snapshot.typeTemplates[index] }
            index += 1
        }
        return fallback
    }
}

/// One name that exists in a served zone (with data, or as an empty non-terminal).
struct Node {
    var nameStart: UInt32
    var nameLength: UInt16
    var hash: UInt32
    var zone: Int32
    var answers: TypeAnswers
    /// At or below a zone cut: the referral to answer with (-1 otherwise).
    var referralTemplate: Int32
    /// At a zone cut: the parent side's answer to a DS query.
    var dsTemplate: Int32
    /// The node of `*.<this name>`, or -1.
    var wildcardChild: Int32
    /// For a wildcard node: answers synthesised for names it covers (RFC 4592), owner = QNAME.
    var synthesised: TypeAnswers
    /// A steered (model) name: index into `steeredRows`, or -1.
    var steering: Int32 = -1
}

/// Encoded response fragments with their bodies and relocations, allocated once and read
/// through unchecked pointers (the builder guarantees every index). Each part of a snapshot
/// owns one, in its arena.
struct TemplateTable {
    let templates: UnsafeMutableBufferPointer<Template>
    let bodies: UnsafeMutableBufferPointer<UInt8>
    let relocations: UnsafeMutableBufferPointer<UInt16>
    /// The longest template body, to size TCP response buffers.
    let maximumBodyLength: Int
    /// How many of each the buffers hold (an empty array still gets a buffer of one).
    let counts: (templates: Int, bodies: Int, relocations: Int)

    init(templates: [Template], bodies: [UInt8], relocations: [UInt16], in arena: Arena) {
        self.templates = arena.copy(templates)
        self.bodies = arena.copy(bodies)
        self.relocations = arena.copy(relocations)
        maximumBodyLength = templates.map { Int($0.bodyLength) }.max() ?? 0
        counts = (templates.count, bodies.count, relocations.count)
    }
}

/// The memory of one part of a snapshot: every array the query path reads is copied into a
/// block of its own, never moved or resized, and all are freed together with the part.
final class Arena: @unchecked Sendable {
    private var blocks: [UnsafeMutableRawPointer] = []

    /// A copy of `array` (an empty one still gets room for one element, so that a pointer to
    /// its start is valid).
    func copy<T>(_ array: [T]) -> UnsafeMutableBufferPointer<T> {
        let buffer = UnsafeMutableBufferPointer<T>.allocate(capacity: max(array.count, 1))
        _ = buffer.initialize(from: array)
        blocks.append(UnsafeMutableRawPointer(buffer.baseAddress!))
        return buffer
    }

    deinit {
        for block in blocks { block.deallocate() }
    }
}

/// The compiled zones: every name, its per-type answers, referrals, wildcards and negative
/// answers. Changes only when a zone file (or the set of steered names) does.
public final class ZoneData: @unchecked Sendable {
    let nodes: UnsafeMutableBufferPointer<Node>
    /// Open-addressed hash table of node indices (-1 = empty); capacity is a power of two.
    let slots: UnsafeMutableBufferPointer<Int32>
    let names: UnsafeMutableBufferPointer<UInt8>
    let typeKeys: UnsafeMutableBufferPointer<UInt16>
    let typeTemplates: UnsafeMutableBufferPointer<Int32>
    let table: TemplateTable
    let nxdomainTemplates: UnsafeMutableBufferPointer<Int32>
    /// The zones served, in load order.
    public let zones: [Zone]
    /// The steered names the nodes refer to (`Node.steering` indexes this list), and the zone
    /// each is in (-1: none).
    public let steeredNames: [DomainName]
    let steeredZones: [Int]
    /// Unique per zone part built in this process.
    let generation: UInt64

    private let arena = Arena()
    private static let generations = ManagedAtomic<UInt64>(0)

    init(
        nodes: [Node], slots: [Int32], names: [UInt8], typeKeys: [UInt16], typeTemplates: [Int32],
        table: TemplateTableBuilder, nxdomainTemplates: [Int32], zones: [Zone], steeredNames: [DomainName],
        steeredZones: [Int]
    ) {
        self.nodes = arena.copy(nodes)
        self.slots = arena.copy(slots)
        self.names = arena.copy(names)
        self.typeKeys = arena.copy(typeKeys)
        self.typeTemplates = arena.copy(typeTemplates)
        self.table = table.make(in: arena)
        self.nxdomainTemplates = arena.copy(nxdomainTemplates)
        self.zones = zones
        self.steeredNames = steeredNames
        self.steeredZones = steeredZones
        generation = Self.generations.wrappingIncrementThenLoad(ordering: .relaxed)
    }

}

/// The compiled steering: the prefix tries of answer classes, each steered name's answer per
/// class, and those answers encoded. Replaced alone on every health change (the zone part
/// stays), and re-encoded alone when a zone's SOA changes.
public final class SteeringData: @unchecked Sendable {
    /// Prefix tries mapping client addresses to answer classes, as `StrideTrie` nodes; shared
    /// with the next steering part when its answer classes are the same.
    let tries: AnswerTries
    var trie4: UnsafeMutableBufferPointer<UInt32> { tries.trie4 }
    var trie6: UnsafeMutableBufferPointer<UInt32> { tries.trie6 }
    /// Per steered name: where its answers by row start in `classAnswers` (`rowCount` each).
    let steeredRows: UnsafeMutableBufferPointer<Int32>
    let classAnswers: UnsafeMutableBufferPointer<Int32>
    /// Per answer class: -1, or where its shards' rows start in `shardRows` (a class answered
    /// per shard: `SteeringTable.shardAnswers`). A row is an answer class's answers for every
    /// name; a split class's own row is that of its shard 0.
    let splitOf: UnsafeMutableBufferPointer<Int32>
    let shardRows: UnsafeMutableBufferPointer<Int32>
    /// Rows per steered name (answer classes and shard rows alike): queries are counted per
    /// (name, row), so that demand is seen per answer class and shard.
    public let rowCount: Int
    /// The answer of each (name, row), for counting by site off the query path.
    let rowAnswers: [Int32]
    /// Three templates per (zone, answer): A, AAAA and any other type. A steered name's answer
    /// `a` is at `steeredTemplates[steeredTemplateStarts[name] + 3 * a + kind]`.
    let steeredTemplateStarts: UnsafeMutableBufferPointer<Int32>
    let steeredTemplates: UnsafeMutableBufferPointer<Int32>
    let table: TemplateTable
    /// Steered names, and the sites each steered answer names (for query statistics).
    let steeredNames: [String]
    let steeredAnswerSites: [[String]]
    /// Each steered answer's TTL (demand is queries × the TTL they were answered with).
    let answerTTLs: [UInt32]
    /// Unique per steering part built in this process (never reused, unlike an address).
    public let generation: UInt64
    /// What this part was built from, for the next build to tell what it may reuse.
    let basis: Basis

    struct Basis {
        /// The location classes (the tries map them to answer classes: `AnswerTries.classOf`).
        let locations: LocationTrie
        /// Each answer's key, numbered in `answerKeyEpoch` (`SteeringTable.answerKeys`).
        let answerKeys: [Int32]
        let answerKeyEpoch: UInt64
        /// The zone part the templates were encoded for.
        let zoneGeneration: UInt64
    }

    /// The location classes this part answers, and the row (`rowCount`) in which the queries
    /// of each (location class, shard) are counted.
    public var locationCount: Int { tries.classOf.count }
    /// The TTL the answer of `name`'s row `row` carries.
    public func ttl(name: Int, row: Int) -> UInt32 {
        let index = name * rowCount + row
        guard index < rowAnswers.count, Int(rowAnswers[index]) < answerTTLs.count else { return 0 }
        return answerTTLs[Int(rowAnswers[index])]
    }

    public func row(location: Int, shard: Int) -> Int {
        let answerClass = Int(location < tries.classOf.count ? tries.classOf[location] : 0)
        let split = Int(splitOf[answerClass])
        return split >= 0 ? Int(shardRows[split + shard]) : answerClass
    }

    private let arena = Arena()
    private static let generations = ManagedAtomic<UInt64>(0)

    init(
        tries: AnswerTries, steeredRows: [Int32], classAnswers: [Int32], splitOf: [Int32], shardRows: [Int32],
        steeredTemplateStarts: [Int32], steeredTemplates: [Int32], table: TemplateTableBuilder, steeredNames: [String],
        steeredAnswerSites: [[String]], answerTTLs: [UInt32], basis: Basis
    ) {
        self.tries = tries
        self.basis = basis
        self.steeredRows = arena.copy(steeredRows)
        self.classAnswers = arena.copy(classAnswers)
        self.splitOf = arena.copy(splitOf.isEmpty ? [-1] : splitOf)
        self.shardRows = arena.copy(shardRows.isEmpty ? [0] : shardRows)
        rowCount = max(1, splitOf.count)
        rowAnswers = classAnswers
        self.steeredTemplateStarts = arena.copy(steeredTemplateStarts)
        self.steeredTemplates = arena.copy(steeredTemplates)
        self.table = table.make(in: arena)
        self.steeredNames = steeredNames
        self.steeredAnswerSites = steeredAnswerSites
        self.answerTTLs = answerTTLs
        generation = Self.generations.wrappingIncrementThenLoad(ordering: .relaxed)
    }

}

/// The two stride tries of a steering part, owned apart so that steering parts with the same
/// answer classes share them, and with what the next build needs to redo only what changed.
final class AnswerTries: @unchecked Sendable {
    let trie4: UnsafeMutableBufferPointer<UInt32>
    let trie6: UnsafeMutableBufferPointer<UInt32>
    /// What the next build patches; taken over by it (the query path reads only the buffers
    /// above, which are copies). Builds run one at a time, on the compile thread.
    private var state4: AnswerTrie
    private var state6: AnswerTrie
    private var hasState = true
    /// The answer class of each location class these tries were built for.
    let classOf: [Int32]

    /// The tries of `locations` under `classOf`, patched from `previous` (built for the same
    /// locations, and not patched before) where it applies.
    init(locations: LocationTrie, classOf: [Int32], previous: AnswerTries? = nil) {
        if let previous, previous.hasState {
            // Taken, not copied: `previous` keeps its buffers for the snapshot still serving.
            state4 = previous.state4
            state6 = previous.state6
            previous.state4 = AnswerTrie()
            previous.state6 = AnswerTrie()
            previous.hasState = false
            state4.update(locations: locations.v4, old: previous.classOf, new: classOf)
            state6.update(locations: locations.v6, old: previous.classOf, new: classOf)
        } else {
            state4 = AnswerTrie(locations: locations.v4, classOf: classOf)
            state6 = AnswerTrie(locations: locations.v6, classOf: classOf)
        }
        self.classOf = classOf
        trie4 = state4.aligned()
        trie6 = state6.aligned()
    }

    deinit {
        trie4.deallocate()
        trie6.deallocate()
    }
}

/// Everything the query path reads: a zone part and a steering part, immutable, swapped whole
/// by one atomic store. The parts own their memory; the snapshot keeps them alive and copies
/// their pointers, so that the query path reads each array with one load, as from one object.
public final class Snapshot: AtomicReference, @unchecked Sendable {
    public let zoneData: ZoneData
    public let steeringData: SteeringData
    let nodes: UnsafeMutableBufferPointer<Node>
    let slots: UnsafeMutableBufferPointer<Int32>
    let names: UnsafeMutableBufferPointer<UInt8>
    let typeKeys: UnsafeMutableBufferPointer<UInt16>
    let typeTemplates: UnsafeMutableBufferPointer<Int32>
    let zoneTemplates: TemplateTable
    let nxdomainTemplates: UnsafeMutableBufferPointer<Int32>
    let trie4: UnsafeMutableBufferPointer<UInt32>
    let trie6: UnsafeMutableBufferPointer<UInt32>
    let steeredRows: UnsafeMutableBufferPointer<Int32>
    let classAnswers: UnsafeMutableBufferPointer<Int32>
    let splitOf: UnsafeMutableBufferPointer<Int32>
    let shardRows: UnsafeMutableBufferPointer<Int32>
    let steeredTemplateStarts: UnsafeMutableBufferPointer<Int32>
    let steeredTemplates: UnsafeMutableBufferPointer<Int32>
    let steeringTemplates: TemplateTable
    let steeredRowCount: Int
    /// The longest template body, to size TCP response buffers.
    public let maximumBodyLength: Int

    /// Pairs a zone part with a steering part compiled for its steered names.
    public init(zone: ZoneData, steering: SteeringData) {
        precondition(
            steering.steeredNames.count == zone.steeredNames.count,
            "a steering part must be compiled for the zone part's steered names")
        zoneData = zone
        steeringData = steering
        nodes = zone.nodes
        slots = zone.slots
        names = zone.names
        typeKeys = zone.typeKeys
        typeTemplates = zone.typeTemplates
        zoneTemplates = zone.table
        nxdomainTemplates = zone.nxdomainTemplates
        trie4 = steering.trie4
        trie6 = steering.trie6
        steeredRows = steering.steeredRows
        classAnswers = steering.classAnswers
        splitOf = steering.splitOf
        shardRows = steering.shardRows
        steeredTemplateStarts = steering.steeredTemplateStarts
        steeredTemplates = steering.steeredTemplates
        steeringTemplates = steering.table
        steeredRowCount = steering.rowCount
        maximumBodyLength = max(zone.table.maximumBodyLength, steering.table.maximumBodyLength)
    }

    /// The same zones with other steering (a health change).
    public func replacingSteering(_ steering: SteeringData) -> Snapshot { Snapshot(zone: zoneData, steering: steering) }

    /// The zones served, in load order.
    public var zones: [Zone] { zoneData.zones }
    /// Steered names, and the sites each steered answer names (for query statistics).
    public var steeredNames: [String] { steeringData.steeredNames }
    var steeredAnswerSites: [[String]] { steeringData.steeredAnswerSites }
    /// Unique per steering part: statistics by steered answer are laid out per generation.
    var generation: UInt64 { steeringData.generation }

    /// The four address bits a stride node at `depth` is indexed by.
    @inline(__always)
    static func nibble(_ high: UInt64, _ low: UInt64, _ depth: Int) -> Int {
        depth < 64 ? Int((high >> UInt64(60 - depth)) & 0xF) : Int((low >> UInt64(124 - depth)) & 0xF)
    }

    /// One step of a walk: the (class, scope) when the entry is a leaf, nil to go on to
    /// `trie[16 * node + nibble]`, which is then the next node.
    @inline(__always)
    static func step(
        _ trie: UnsafeMutableBufferPointer<UInt32>, node: Int, depth: Int, high: UInt64, low: UInt64, bits: Int
    ) -> (Int32, Int)? {
        guard depth < bits else { return (0, bits) }
        let entry = trie[16 * node + nibble(high, low, depth)]
        guard entry & StrideTrie.leafFlag != 0 else { return nil }
        let leafDepth = Int((entry >> 24) & 0x7F)
        // A whole space of one class: the answer holds for every address (scope 0).
        if node == 0 && leafDepth == 1 && trie[0] == trie[15] && (trie[0] >> 24) & 0x7F == 1 {
            return (Int32(entry & 0xFF_FFFF), 0)
        }
        return (Int32(entry & 0xFF_FFFF), leafDepth)
    }

    /// The class of a client address and the prefix length over which it holds (the exact depth
    /// of the binary leaf, kept in the entry).
    @inline(__always)
    static func classify(
        _ trie: UnsafeMutableBufferPointer<UInt32>, high: UInt64, low: UInt64, bits: Int
    ) -> (Int32, Int) {
        var node = 0
        var depth = 0
        while true {
            if let found = step(trie, node: node, depth: depth, high: high, low: low, bits: bits) { return found }
            node = Int(trie[16 * node + nibble(high, low, depth)])
            depth += 4
        }
    }

    /// The answer class and scope of an address (4 or 16 octets; IPv4-mapped and NAT64
    /// addresses are looked up as IPv4, with the scope counted in IPv6 bits). For tools and tests.
    public func classify(_ address: [UInt8]) -> (classID: Int, scope: Int) {
        let (high, low) = address.withUnsafeBufferPointer { Responder.addressBits($0.baseAddress!, address.count) }
        var location = Responder.classify(self, SteeringLookup(high: high, low: low, isIPv6: address.count == 16))
        _ = row(of: &location)
        return (Int(location.classID), location.scope)
    }

    /// The row a located client's answers are read from: its answer class, or for a class
    /// answered per shard its shard's row, the scope then no wider than the shard's prefix.
    @inline(__always)
    func row(of location: inout SteeringLocation) -> Int {
        let split = Int(splitOf[Int(location.classID)])
        guard split >= 0 else { return Int(location.classID) }
        location.scope = max(location.scope, Int(location.shardScope))
        return Int(shardRows[split + Int(location.shard)])
    }

    /// FNV-1a over a lower-cased wire name.
    @inline(__always)
    static func hash(_ start: UnsafePointer<UInt8>, _ count: Int) -> UInt32 {
        var hash: UInt32 = 2_166_136_261
        for index in 0..<count {
            hash = (hash ^ UInt32(start[index])) &* 16_777_619
        }
        return hash
    }

    /// The node for a lower-cased wire name, or -1.
    @inline(__always)
    func find(_ start: UnsafePointer<UInt8>, _ count: Int) -> Int32 {
        let hash = Snapshot.hash(start, count)
        let mask = slots.count - 1
        var slot = Int(hash) & mask
        while true {
            let index = slots[slot]
            if index < 0 { return -1 }
            let node = nodes[Int(index)]
            if node.hash == hash && Int(node.nameLength) == count
                && memcmp(names.baseAddress! + Int(node.nameStart), start, count) == 0
            {
                return index
            }
            slot = (slot + 1) & mask
        }
    }
}

/// Holds the snapshot being served; reload publishes a new one with one atomic store.
public final class SnapshotStore: Sendable {
    private let current: ManagedAtomic<Snapshot>

    public init(_ snapshot: Snapshot) { current = ManagedAtomic(snapshot) }

    /// One acquiring load; the caller keeps the reference for a batch of queries.
    @inline(__always)
    public func load() -> Snapshot { current.load(ordering: .acquiring) }

    public func publish(_ snapshot: Snapshot) { current.store(snapshot, ordering: .releasing) }
}

#if canImport(Glibc)
import Glibc
#endif
