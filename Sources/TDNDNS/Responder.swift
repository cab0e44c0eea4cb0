#if canImport(Glibc)
import Glibc
#endif

/// How a query arrived; it decides the response size limit (RFC 1035 §4.2, RFC 6891 §6.2.5).
public enum Transport: Sendable {
    case udp
    case tcp
}

/// Answers one query from a snapshot, in named stages: parse (`QueryParser`), admit (opcode,
/// class and type rules), resolve in the zones (`Resolution`), steer a model hostname
/// (`SteeredResponse.swift`), and write (`ResponseWriter`). The query is read in place and the
/// response written straight into the caller's buffer: no allocation, no locks, no shared
/// mutable state. Each thread owns its own `Responder` (the scratch space below is per thread).
package final class Responder: @unchecked Sendable {
    /// The largest UDP payload we send (RFC 6891 §6.2.5; 1232 per DNS Flag Day 2020).
    public let maxUDPPayload: Int
    /// The lower-cased query name, and where each of its labels starts (`QueryParser`).
    private let name: UnsafeMutablePointer<UInt8>
    private let labelStarts: UnsafeMutablePointer<Int>

    /// Counts what is answered, when statistics are wanted.
    let counters: QueryCounters?
    /// The question type and steered name and answer row of the query being answered, for
    /// `counters`.
    var questionType: UInt16 = 0
    var steeredName = -1
    var steeredRow = 0
    var badVersion = false

    public init(maxUDPPayload: Int = 1232, transport: Transport = .udp, stats: QueryStats? = nil) {
        self.maxUDPPayload = max(512, min(maxUDPPayload, 65535))
        name = .allocate(capacity: QueryParser.nameCapacity)
        labelStarts = .allocate(capacity: QueryParser.labelCapacity)
        counters = stats.map { QueryCounters(transport: transport, stats: $0) }
    }

    /// Folds this thread's counts into the shared statistics (at most about once a second).
    @inline(__always)
    public func flushStatistics(force: Bool = false) {
        guard let counters else { return }
        if force { counters.flush() } else { counters.flushIfDue(now: monotonicNanoseconds()) }
    }

    deinit {
        name.deallocate()
        labelStarts.deallocate()
    }

    /// Writes the response to `query` into `out` and returns its length; 0 means "drop"
    /// (too short to carry an ID, or itself a response: RFC 1035 §4.1.1).
    ///
    /// `peer` is the sender's `sockaddr` (IPv4 or IPv6), used to locate clients that send no
    /// ECS option; nil when unknown.
    ///
    /// Batching: with `deferred`, a query for a steered name writes nothing; what it parsed and
    /// the address to locate go to `deferred`, and the result is `Responder.deferredResult`. The
    /// caller locates such queries together (`locate(_:count:snapshot:into:)`) and finishes
    /// each with `respond(deferred:location:query:into:transport:snapshot:)`.
    @inline(__always)
    public func respond(
        to query: UnsafeRawBufferPointer, into out: UnsafeMutableRawBufferPointer, transport: Transport,
        snapshot: Snapshot, peer: UnsafeRawPointer? = nil, deferred: UnsafeMutablePointer<DeferredQuery>? = nil
    ) -> Int {
        guard counters != nil else {
            return answer(
                to: query, into: out, transport: transport, snapshot: snapshot, peer: peer, deferred: deferred)
        }
        resetCounting()
        let written = answer(
            to: query, into: out, transport: transport, snapshot: snapshot, peer: peer, deferred: deferred)
        if written == Responder.deferredResult { return written }
        count(written, out, snapshot)
        return written
    }

    /// The second pass of a deferred query: only the steered answer for `location` is written.
    @inline(__always)
    public func respond(
        deferred: DeferredQuery, location: SteeringLocation, query: UnsafeRawBufferPointer,
        into out: UnsafeMutableRawBufferPointer, transport: Transport, snapshot: Snapshot
    ) -> Int {
        guard let q = query.baseAddress?.assumingMemoryBound(to: UInt8.self),
            let o = out.baseAddress?.assumingMemoryBound(to: UInt8.self)
        else { return 0 }
        resetCounting()
        questionType = deferred.parsed.qtype
        var writer = writer(o, out.count, q, transport, deferred.parsed)
        let written = steer(&writer, snapshot, Int(deferred.steeredName), location: location)
        count(written, out, snapshot)
        return written
    }

    @inline(__always)
    private func writer(
        _ out: UnsafeMutablePointer<UInt8>, _ capacity: Int, _ query: UnsafePointer<UInt8>, _ transport: Transport,
        _ parsed: ParsedQuery
    ) -> ResponseWriter {
        ResponseWriter(
            out: out, capacity: capacity, query: query, transport: transport, ourPayload: UInt16(maxUDPPayload),
            parsed: parsed)
    }

    @inline(__always)
    private func resetCounting() {
        questionType = 0
        steeredName = -1
        badVersion = false
    }

    @inline(__always)
    private func count(_ written: Int, _ out: UnsafeMutableRawBufferPointer, _ snapshot: Snapshot) {
        guard let counters else { return }
        if written <= 0 {
            counters.countDropped()
        } else {
            let rcode =
                badVersion ? ResponseCode.badVers.rawValue : UInt16(out.load(fromByteOffset: 3, as: UInt8.self) & 0x0F)
            counters.count(qtype: questionType, rcode: rcode)
            if steeredName >= 0 { counters.countSteered(snapshot, name: steeredName, row: steeredRow) }
        }
    }

    private func answer(
        to query: UnsafeRawBufferPointer, into out: UnsafeMutableRawBufferPointer, transport: Transport,
        snapshot: Snapshot, peer: UnsafeRawPointer?, deferred: UnsafeMutablePointer<DeferredQuery>?
    ) -> Int {
        guard out.count >= 512, let q = query.baseAddress?.assumingMemoryBound(to: UInt8.self),
            let o = out.baseAddress?.assumingMemoryBound(to: UInt8.self)
        else { return 0 }
        let parsed: ParsedQuery
        switch QueryParser(name: name, labelStarts: labelStarts).parse(q, count: query.count) {
        case .drop:
            return 0
        case .error(let rcode, let partial):
            questionType = partial.qtype
            badVersion = rcode == .badVers
            return writer(o, out.count, q, transport, partial).error(rcode)
        case .query(let query):
            parsed = query
        }
        questionType = parsed.qtype
        var writer = writer(o, out.count, q, transport, parsed)
        if let refusal = Self.admit(parsed) { return writer.error(refusal) }
        switch resolve(parsed, in: snapshot) {
        case .refused:
            return writer.error(.refused)
        case .zone(let template):
            return writer.answer(snapshot.zoneTemplates, Int(template), queryNameLength: parsed.nameLength)
        case .steered(let index):
            guard let lookup = Self.clientAddress(parsed, q, peer: peer) else {
                // Nowhere to locate the client: the answer of the unknown location (class 0).
                return steer(&writer, snapshot, index, location: SteeringLocation(classID: 0, scope: 0))
            }
            if let deferred {
                deferred.pointee = DeferredQuery(parsed: parsed, steeredName: Int32(index), lookup: lookup)
                return Responder.deferredResult
            }
            return steer(&writer, snapshot, index, location: Self.classify(snapshot, lookup))
        }
    }

    /// The opcode, class and type rules: only QUERY is implemented (NOTIFY, UPDATE and the
    /// rest get NOTIMP, RFC 1035 §4.1.1), only class IN is served, OPT is not a question (RFC
    /// 6891 §6.1.1), zone transfers are not offered, and TKEY, TSIG, MAILB and MAILA are not
    /// implemented. Nil when the query may be answered.
    @inline(__always)
    static func admit(_ parsed: ParsedQuery) -> ResponseCode? {
        if !parsed.isQuery { return .notImp }
        if parsed.qclass != Responder.classIN { return .refused }
        switch RecordType(parsed.qtype) {
        case .opt: return .formErr
        case .ixfr, .axfr: return .refused
        case .tkey, .tsig, .mailb, .maila: return .notImp
        default: return nil
        }
    }

    /// Class IN (RFC 1035 §3.2.4).
    static let classIN: UInt16 = 1

    /// Where a query's answer comes from (RFC 1034 §4.3.2).
    enum Resolution {
        /// A compiled answer of the zones (`Snapshot.zoneTemplates`): an RRset, NODATA, a
        /// referral, a wildcard synthesis or NXDOMAIN.
        case zone(Int32)
        /// A model hostname: its answer depends on where the client is.
        case steered(Int)
        /// No zone of ours holds the name.
        case refused
    }

    /// The zone lookup: the name itself, else its closest encloser (a delegation, a wildcard
    /// below it, or NXDOMAIN in its zone).
    @inline(__always)
    func resolve(_ parsed: ParsedQuery, in snapshot: Snapshot) -> Resolution {
        let nodes = snapshot.nodes
        let length = parsed.nameLength
        let qtype = parsed.qtype
        let found = snapshot.find(name, length)
        if found >= 0 {
            let node = nodes[Int(found)]
            if node.steering >= 0 { return .steered(Int(node.steering)) }
            if node.referralTemplate >= 0 {
                // DS belongs to the parent side of a delegation (RFC 4035 §3.1.4.1).
                return .zone(
                    qtype == RecordType.ds.rawValue && node.dsTemplate >= 0 ? node.dsTemplate : node.referralTemplate)
            }
            return .zone(node.answers.template(for: qtype, in: snapshot))
        }
        var encloser: Int32 = -1
        var label = 1
        while label <= parsed.labelCount {
            let start = labelStarts[label]
            encloser = snapshot.find(name + start, length - start)
            if encloser >= 0 { break }
            label += 1
        }
        guard encloser >= 0 else { return .refused }
        let node = nodes[Int(encloser)]
        if node.referralTemplate >= 0 { return .zone(node.referralTemplate) }
        if node.wildcardChild >= 0 {
            return .zone(nodes[Int(node.wildcardChild)].synthesised.template(for: qtype, in: snapshot))
        }
        return .zone(snapshot.nxdomainTemplates[Int(node.zone)])
    }
}
