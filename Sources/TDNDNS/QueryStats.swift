import Synchronization

/// Query counts for monitoring. Each serving thread counts into its own `QueryCounters` (plain
/// memory it alone touches: nothing shared, no atomics on the query path) and folds them into
/// the shared `QueryStats` about once a second, so a scrape sees counts at most a second old.
public final class QueryStats: Sendable {
    public struct Key: Hashable, Sendable {
        public var transport: String
        public var qtype: String
        public var rcode: String
    }

    /// Steered answers: the name asked and the sites its answer named (none for a denial).
    public struct SteeredKey: Hashable, Sendable {
        public var name: String
        public var sites: [String]
    }

    /// Steered queries of one steering part (`generation`) by steered name and row
    /// (`SteeringData.row(location:shard:)`): the demand of each answer class and shard.
    public struct RowKey: Hashable, Sendable {
        public var generation: UInt64
        public var name: Int
        public var row: Int
    }

    public struct Totals: Sendable {
        public var queries: [Key: UInt64] = [:]
        /// Datagrams dropped unanswered (too short, or themselves responses), by transport.
        public var dropped: [String: UInt64] = [:]
        public var steered: [SteeredKey: UInt64] = [:]
        /// Since the last `takeRows`.
        public var rows: [RowKey: UInt64] = [:]
        public init() {}
    }

    private let totals = Mutex(Totals())

    public init() {}

    public func read() -> Totals { totals.withLock { $0 } }

    /// The steered queries by row since the last call (the demand estimate's input).
    public func takeRows() -> [RowKey: UInt64] {
        totals.withLock { totals in
            defer { totals.rows = [:] }
            return totals.rows
        }
    }

    func add(_ body: (inout Totals) -> Void) { totals.withLock { body(&$0) } }
}

/// One thread's counters. Not thread-safe by design: its owner counts and flushes.
final class QueryCounters {
    /// Query types counted by name; the rest are "other".
    static let types: [UInt16] = [1, 2, 5, 6, 12, 15, 16, 28, 33, 35, 39, 43, 48, 64, 65, 251, 252, 255, 257]
    static let typeSlots = types.count + 1
    static let rcodeSlots = 17
    /// Index of each type in `types` (+1; 0 = other), for types below 512.
    private static let typeIndex: [UInt8] = {
        var table = [UInt8](repeating: 0, count: 512)
        for (index, type) in types.enumerated() { table[Int(type)] = UInt8(index + 1) }
        return table
    }()

    let transport: String
    private let cells: UnsafeMutablePointer<UInt64>
    private var dropped: UInt64 = 0
    private var pending = false
    /// Steered queries per (name, row) of the snapshot `steeredGeneration` (a row: an answer
    /// class or a shard's, `Snapshot.rowCount`). Its names, answers and sites are kept, not the
    /// snapshot: a reference here would keep a whole old snapshot alive on an idle thread
    /// after every reload.
    private var steered: UnsafeMutablePointer<UInt64>?
    private var steeredCapacity = 0
    private var steeredGeneration: UInt64 = 0
    private var steeredNames: [String] = []
    private var steeredAnswerSites: [[String]] = []
    private var rowAnswers: [Int32] = []
    private var steeredRowCount = 1
    private var lastFlush: UInt64 = 0

    init(transport: Transport, stats: QueryStats) {
        self.transport = transport == .udp ? "udp" : "tcp"
        self.stats = stats
        cells = .allocate(capacity: Self.typeSlots * Self.rcodeSlots)
        cells.initialize(repeating: 0, count: Self.typeSlots * Self.rcodeSlots)
    }

    deinit {
        cells.deallocate()
        steered?.deallocate()
    }

    @inline(__always)
    func count(qtype: UInt16, rcode: UInt16) {
        let type = qtype < 512 ? Int(Self.typeIndex[Int(qtype)]) : 0
        cells[type * Self.rcodeSlots + Int(min(rcode, 16))] &+= 1
        pending = true
    }

    @inline(__always)
    func countDropped() {
        dropped &+= 1
        pending = true
    }

    /// Counts a steered answer of `snapshot` by its row: counts of an older snapshot are
    /// folded first.
    @inline(__always)
    func countSteered(_ snapshot: Snapshot, name: Int, row: Int) {
        if steeredGeneration != snapshot.generation { switchSnapshot(snapshot) }
        let cell = name * snapshot.steeredRowCount + row
        guard let steered, cell < steeredCapacity else { return }
        steered[cell] &+= 1
        pending = true
    }

    private let stats: QueryStats

    private func switchSnapshot(_ snapshot: Snapshot) {
        flush()
        steered?.deallocate()
        steeredCapacity = snapshot.steeredNames.count * snapshot.steeredRowCount
        steered = steeredCapacity > 0 ? .allocate(capacity: steeredCapacity) : nil
        steered?.initialize(repeating: 0, count: steeredCapacity)
        steeredGeneration = snapshot.generation
        steeredNames = snapshot.steeredNames
        steeredAnswerSites = snapshot.steeredAnswerSites
        rowAnswers = snapshot.steeringData.rowAnswers
        steeredRowCount = snapshot.steeredRowCount
    }

    /// Folds the counts into the shared totals when at least `interval` nanoseconds passed.
    func flushIfDue(now: UInt64, interval: UInt64 = 1_000_000_000) {
        guard pending, now &- lastFlush >= interval else { return }
        lastFlush = now
        flush()
    }

    func flush() {
        guard pending else { return }
        pending = false
        var queries: [(QueryStats.Key, UInt64)] = []
        for type in 0..<Self.typeSlots {
            for rcode in 0..<Self.rcodeSlots {
                let value = cells[type * Self.rcodeSlots + rcode]
                guard value > 0 else { continue }
                cells[type * Self.rcodeSlots + rcode] = 0
                let name = type == 0 ? "other" : RecordType(Self.types[type - 1]).description
                queries.append(
                    (
                        QueryStats.Key(
                            transport: transport, qtype: name, rcode: ResponseCode(rawValue: UInt16(rcode)).description),
                        value
                    ))
            }
        }
        var answers: [(QueryStats.SteeredKey, UInt64)] = []
        var rows: [(QueryStats.RowKey, UInt64)] = []
        if let steered {
            for index in 0..<steeredCapacity where steered[index] > 0 {
                let name = index / steeredRowCount
                let answer = index < rowAnswers.count ? Int(rowAnswers[index]) : 0
                let sites = answer < steeredAnswerSites.count ? steeredAnswerSites[answer] : []
                answers.append((QueryStats.SteeredKey(name: steeredNames[name], sites: sites), steered[index]))
                rows.append(
                    (
                        QueryStats.RowKey(generation: steeredGeneration, name: name, row: index % steeredRowCount),
                        steered[index]
                    ))
                steered[index] = 0
            }
        }
        let droppedNow = dropped
        dropped = 0
        let transport = self.transport
        stats.add { totals in
            for (key, value) in queries { totals.queries[key, default: 0] += value }
            for (key, value) in answers { totals.steered[key, default: 0] += value }
            for (key, value) in rows { totals.rows[key, default: 0] += value }
            if droppedNow > 0 { totals.dropped[transport, default: 0] += droppedNow }
        }
    }
}

#if canImport(Glibc)
import Glibc
#endif

/// Monotonic seconds (not the wall clock: an NTP step does not move it).
public func monotonicSeconds() -> Double {
    var now = timespec()
    clock_gettime(CLOCK_MONOTONIC, &now)
    return Double(now.tv_sec) + Double(now.tv_nsec) / 1e9
}

/// Monotonic nanoseconds (vDSO; no system call).
@inline(__always) func monotonicNanoseconds() -> UInt64 {
    var now = timespec()
    clock_gettime(CLOCK_MONOTONIC_COARSE, &now)
    return UInt64(now.tv_sec) &* 1_000_000_000 &+ UInt64(now.tv_nsec)
}
