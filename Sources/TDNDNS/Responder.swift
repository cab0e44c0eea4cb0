#if canImport(Glibc)
import Glibc
#endif

/// How a query arrived; it decides the response size limit (RFC 1035 §4.2, RFC 6891 §6.2.5).
public enum Transport: Sendable {
    case udp
    case tcp
}

/// Answers one query from a snapshot. The query is read in place and the response written
/// straight into the caller's buffer: no allocation, no locks, no shared mutable state. Each
/// thread owns its own `Responder` (the scratch space below is per thread).
public final class Responder: @unchecked Sendable {
    /// The largest UDP payload we send (RFC 6891 §6.2.5; 1232 per DNS Flag Day 2020).
    public let maxUDPPayload: Int
    /// The lower-cased query name, and where each of its labels starts.
    private let name: UnsafeMutablePointer<UInt8>
    private let labelStarts: UnsafeMutablePointer<Int>

    /// Counts what is answered, when statistics are wanted.
    let counters: QueryCounters?
    /// The question type and steered answer of the query being answered, for `counters`.
    private var questionType: UInt16 = 0
    private var steeredName = -1
    private var steeredAnswer = 0
    private var badVersion = false

    public init(maxUDPPayload: Int = 1232, transport: Transport = .udp, stats: QueryStats? = nil) {
        self.maxUDPPayload = max(512, min(maxUDPPayload, 65535))
        name = .allocate(capacity: 256)
        labelStarts = .allocate(capacity: 130)
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
    /// Batching: with `deferred`, a query for a steered name writes nothing; its client address
    /// goes to `deferred` and the result is `Responder.deferredResult`. The caller locates such
    /// queries together (`locate(_:count:snapshot:into:)`) and calls again with `location`.
    @inline(__always)
    public func respond(
        to query: UnsafeRawBufferPointer, into out: UnsafeMutableRawBufferPointer, transport: Transport,
        snapshot: Snapshot, peer: UnsafeRawPointer? = nil,
        deferred: UnsafeMutablePointer<SteeringLookup>? = nil, location: SteeringLocation? = nil
    ) -> Int {
        guard let counters else {
            return answer(
                to: query, into: out, transport: transport, snapshot: snapshot, peer: peer, deferred: deferred,
                location: location)
        }
        questionType = 0
        steeredName = -1
        badVersion = false
        let written = answer(
            to: query, into: out, transport: transport, snapshot: snapshot, peer: peer, deferred: deferred,
            location: location)
        if written == Responder.deferredResult { return written }
        if written <= 0 {
            counters.countDropped()
        } else {
            let rcode = badVersion ? 16 : UInt16(out.load(fromByteOffset: 3, as: UInt8.self) & 0x0F)
            counters.count(qtype: questionType, rcode: rcode)
            if steeredName >= 0 { counters.countSteered(snapshot, name: steeredName, answer: steeredAnswer) }
        }
        return written
    }

    private func answer(
        to query: UnsafeRawBufferPointer, into out: UnsafeMutableRawBufferPointer, transport: Transport,
        snapshot: Snapshot, peer: UnsafeRawPointer?,
        deferred: UnsafeMutablePointer<SteeringLookup>?, location: SteeringLocation?
    ) -> Int {
        let n = query.count
        guard n >= 12, out.count >= 512, let q = query.baseAddress?.assumingMemoryBound(to: UInt8.self),
            let o = out.baseAddress?.assumingMemoryBound(to: UInt8.self)
        else { return 0 }
        if q[2] & 0x80 != 0 { return 0 }

        var r = Reply(out: o, capacity: out.count, query: q, transport: transport, ourPayload: UInt16(maxUDPPayload))
        // Only QUERY is implemented; NOTIFY, UPDATE and the rest get NOTIMP (RFC 1035 §4.1.1),
        // echoing the question and OPT when the message parses.
        let isQuery = (q[2] >> 3) & 0xF == 0
        if Reply.u16(q + 4) != 1 { return r.error(isQuery ? .formErr : .notImp) }

        // Question: labels are copied lower-cased for the lookup; the original bytes are echoed.
        var position = 12
        var length = 0
        var labels = 0
        while true {
            guard position < n else { return r.error(.formErr) }
            let labelLength = Int(q[position])
            if labelLength == 0 { break }
            // 0x40/0x80 label types are undefined and a pointer cannot appear in the first
            // name of a message: both are malformed here.
            guard labelLength <= 63, position + 1 + labelLength < n, length + 1 + labelLength < 255 else {
                return r.error(.formErr)
            }
            labelStarts[labels] = length
            labels += 1
            name[length] = UInt8(labelLength)
            for index in 1...labelLength {
                let byte = q[position + index]
                name[length + index] = byte &- 65 < 26 ? byte | 0x20 : byte
            }
            length += 1 + labelLength
            position += 1 + labelLength
        }
        name[length] = 0
        labelStarts[labels] = length
        length += 1
        position += 1
        guard position + 4 <= n else { return r.error(.formErr) }
        let qtype = Reply.u16(q + position)
        questionType = qtype
        let qclass = Reply.u16(q + position + 2)
        position += 4
        r.questionEnd = position

        // NSD's rule: a query carries nothing in the answer and authority sections (NOTIFY
        // and UPDATE do; their records are skipped on the way to the OPT).
        let skipped = Int(Reply.u16(q + 6)) + Int(Reply.u16(q + 8))
        if isQuery && skipped != 0 { return r.error(.formErr) }

        // Additional section: find the OPT record (RFC 6891 §6.1.1) and skip anything else.
        let records = skipped + Int(Reply.u16(q + 10))
        var formErr = false
        for record in 0..<records {
            let ownerStart = position
            while true {
                guard position < n else { return r.error(.formErr) }
                let byte = Int(q[position])
                if byte == 0 {
                    position += 1
                    break
                }
                if byte & 0xC0 == 0xC0 {
                    position += 2
                    break
                }
                guard byte <= 63 else { return r.error(.formErr) }
                position += 1 + byte
            }
            guard position + 10 <= n else { return r.error(.formErr) }
            let type = Reply.u16(q + position)
            let rdataStart = position + 10
            let rdataEnd = rdataStart + Int(Reply.u16(q + position + 8))
            guard rdataEnd <= n else { return r.error(.formErr) }
            if type == 41 && record >= skipped {
                // One OPT, owned by the root (RFC 6891 §6.1.1); more is FORMERR.
                if r.hasEDNS || position - ownerStart != 1 { return r.error(.formErr) }
                r.hasEDNS = true
                r.clientPayload = Reply.u16(q + position + 2)
                r.ednsVersion = q[position + 5]
                r.dnssecOK = q[position + 6] & 0x80 != 0
                var option = rdataStart
                while option < rdataEnd {
                    guard option + 4 <= rdataEnd else {
                        formErr = true
                        break
                    }
                    let code = Reply.u16(q + option)
                    let optionLength = Int(Reply.u16(q + option + 2))
                    guard option + 4 + optionLength <= rdataEnd else {
                        formErr = true
                        break
                    }
                    if code == 8 {
                        if r.ecsStart >= 0 || !Self.validClientSubnet(q + option + 4, optionLength) {
                            formErr = true
                            break
                        }
                        r.ecsStart = option + 4
                        r.ecsLength = optionLength
                    }
                    option += 4 + optionLength
                }
            }
            position = rdataEnd
        }
        if formErr {
            r.ecsStart = -1
            return r.error(.formErr)
        }
        // RFC 6891 §6.1.3: only version 0 is implemented.
        if r.hasEDNS && r.ednsVersion > 0 {
            r.ecsStart = -1
            badVersion = true
            return r.error(.badVers)
        }
        if !isQuery { return r.error(.notImp) }
        if qclass != 1 { return r.error(.refused) }
        switch qtype {
        case 41: return r.error(.formErr)  // OPT is not a question (RFC 6891 §6.1.1)
        case 251, 252: return r.error(.refused)  // zone transfers are not offered
        case 249, 250, 253, 254: return r.error(.notImp)
        default: break
        }

        // Find the answer (RFC 1034 §4.3.2): the name itself, else its closest encloser.
        let nodes = snapshot.nodes
        var template: Int32
        let found = snapshot.find(name, length)
        if found >= 0 {
            let node = nodes[Int(found)]
            if node.steering >= 0 {
                return steer(
                    &r, snapshot, Int(node.steering), qtype: qtype, queryNameLength: length, peer: peer,
                    deferred: deferred, location: location)
            }
            if node.referralTemplate >= 0 {
                template = qtype == 43 && node.dsTemplate >= 0 ? node.dsTemplate : node.referralTemplate
            } else if qtype == 255 {
                template = node.anyTemplate
            } else {
                template = Self.typeTemplate(
                    snapshot, Int(node.typesStart), Int(node.typesCount), qtype, node.defaultTemplate)
            }
        } else {
            var encloser: Int32 = -1
            var label = 1
            while label <= labels {
                let start = labelStarts[label]
                encloser = snapshot.find(name + start, length - start)
                if encloser >= 0 { break }
                label += 1
            }
            guard encloser >= 0 else { return r.error(.refused) }
            let node = nodes[Int(encloser)]
            if node.referralTemplate >= 0 {
                template = node.referralTemplate
            } else if node.wildcardChild >= 0 {
                let wildcard = nodes[Int(node.wildcardChild)]
                if qtype == 255 {
                    template = wildcard.synthAny
                } else {
                    template = Self.typeTemplate(
                        snapshot, Int(wildcard.synthTypesStart), Int(wildcard.synthTypesCount), qtype,
                        wildcard.synthDefault)
                }
            } else {
                template = snapshot.nxdomainTemplates[Int(node.zone)]
            }
        }
        return r.answer(snapshot.zoneTemplates, Int(template), queryNameLength: length)
    }

    /// A model hostname: locate the client (ECS address, else the sender), read its class's
    /// answer, and say in the ECS scope how far around the client that answer holds.
    private func steer(
        _ r: inout Reply, _ snapshot: Snapshot, _ index: Int, qtype: UInt16, queryNameLength: Int,
        peer: UnsafeRawPointer?,
        deferred: UnsafeMutablePointer<SteeringLookup>?, location: SteeringLocation?
    ) -> Int {
        var high: UInt64 = 0
        var low: UInt64 = 0
        var isIPv6 = false
        var known = true
        // RFC 7871 §7.1.2: a source prefix of 0 means "do not locate me by subnet": use the
        // sender's address, as without ECS (the scope below stays 0).
        let bySubnet = r.ecsStart >= 0 && r.query[r.ecsStart + 2] > 0
        if bySubnet {
            let p = r.query + r.ecsStart
            isIPv6 = Reply.u16(p) == 2
            // The address octets present; the rest are zero (RFC 7871 §6).
            var bytes: (UInt64, UInt64) = (0, 0)
            let count = min(r.ecsLength - 4, isIPv6 ? 16 : 4)
            withUnsafeMutableBytes(of: &bytes) { raw in
                for i in 0..<count { raw[i] = p[4 + i] }
            }
            (high, low) = (UInt64(bigEndian: bytes.0), UInt64(bigEndian: bytes.1))
            if !isIPv6 { high &= 0xFFFF_FFFF_0000_0000 }
        } else if let peer {
            let family = peer.load(as: sa_family_t.self)
            if family == sa_family_t(AF_INET) {
                (high, low) = Responder.addressBits(peer.assumingMemoryBound(to: UInt8.self) + 4, 4)
            } else if family == sa_family_t(AF_INET6) {
                (high, low) = Responder.addressBits(peer.assumingMemoryBound(to: UInt8.self) + 8, 16)
                isIPv6 = true
            } else {
                known = false
            }
        } else {
            known = false
        }
        var classID: Int32 = 0
        var scope = 0
        if let location {
            (classID, scope) = (location.classID, location.scope)
        } else if known, let deferred {
            deferred.pointee = SteeringLookup(high: high, low: low, isIPv6: isIPv6)
            return Responder.deferredResult
        } else if known {
            (classID, scope) = Responder.classify(snapshot, high: high, low: low, isIPv6: isIPv6)
        }
        let answer = Int(snapshot.classAnswers[Int(snapshot.steeredRows[index]) + Int(classID)])
        steeredName = index
        steeredAnswer = answer
        let kind = qtype == 1 || qtype == 255 ? 0 : qtype == 28 ? 1 : 2
        // Types other than A/AAAA do not depend on the client: scope 0; so without a subnet.
        if kind != 2 && bySubnet { r.scope = UInt8(scope) }
        let template = snapshot.steeredTemplates[Int(snapshot.steeredTemplateStarts[index]) + 3 * answer + kind]
        return r.answer(snapshot.steeringTemplates, Int(template), queryNameLength: queryNameLength)
    }

    /// What `respond` returns for a query it deferred.
    public static let deferredResult = -1

    /// Locates deferred queries together: their trie walks advance in lockstep, so the loads of
    /// different walks are independent and their cache misses overlap instead of queueing.
    public static func locate(
        _ lookups: UnsafeMutablePointer<SteeringLookup>, count: Int, snapshot: Snapshot,
        into results: UnsafeMutablePointer<SteeringLocation>
    ) {
        for index in 0..<count {
            lookups[index] = lookups[index].normalised
            results[index] = SteeringLocation(classID: 0, scope: -1)
        }
        var pending = count
        while pending > 0 {
            for index in 0..<count where results[index].scope < 0 {
                let lookup = lookups[index]
                let trie = lookup.trie(snapshot)
                if let (classID, depth) = Snapshot.step(
                    trie, node: lookup.node, depth: lookup.depth, high: lookup.high, low: lookup.low, bits: lookup.bits)
                {
                    results[index] = SteeringLocation(classID: classID, scope: lookup.scope(depth))
                    pending -= 1
                } else {
                    lookups[index].node = Int(
                        trie[16 * lookup.node + Snapshot.nibble(lookup.high, lookup.low, lookup.depth)])
                    lookups[index].depth += 4
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

    /// One address's class and scope (`locate` is the batched form).
    @inline(__always)
    static func classify(_ snapshot: Snapshot, high: UInt64, low: UInt64, isIPv6: Bool) -> (Int32, Int) {
        let lookup = SteeringLookup(high: high, low: low, isIPv6: isIPv6).normalised
        let (classID, depth) = Snapshot.classify(
            lookup.trie(snapshot), high: lookup.high, low: lookup.low, bits: lookup.bits)
        return (classID, lookup.scope(depth))
    }

    @inline(__always)
    private static func typeTemplate(
        _ snapshot: Snapshot, _ start: Int, _ count: Int, _ qtype: UInt16, _ fallback: Int32
    ) -> Int32 {
        var index = start
        let end = start + count
        while index < end {
            if snapshot.typeKeys[index] == qtype { return snapshot.typeTemplates[index] }
            index += 1
        }
        return fallback
    }

    /// RFC 7871 §6 and §7.1.2: known family, prefix within the family, exactly the octets the
    /// prefix needs, and no address bits set beyond it.
    @inline(__always)
    static func validClientSubnet(_ p: UnsafePointer<UInt8>, _ length: Int) -> Bool {
        guard length >= 4 else { return false }
        let family = Reply.u16(p)
        let source = Int(p[2])
        let scope = Int(p[3])
        let maximum = family == 1 ? 32 : family == 2 ? 128 : -1
        guard maximum > 0, source <= maximum, scope <= maximum, length - 4 == (source + 7) / 8 else { return false }
        if source % 8 != 0 {
            let mask = UInt8(truncatingIfNeeded: 0xFF >> (source % 8))
            if p[length - 1] & mask != 0 { return false }
        }
        return true
    }
}

/// A client address waiting to be located (see `Responder.locate`).
public struct SteeringLookup: Sendable {
    var high: UInt64
    var low: UInt64
    var isIPv6: Bool
    var scopeOffset = 0
    var node = 0
    var depth = 0

    init(high: UInt64, low: UInt64, isIPv6: Bool) {
        self.high = high
        self.low = low
        self.isIPv6 = isIPv6
    }

    /// Ready to walk from the root. IPv4-mapped (::ffff:0:0/96) and NAT64 (64:ff9b::/96)
    /// addresses are IPv4 clients: they walk the IPv4 trie, with the scope counted in IPv6 bits.
    var normalised: SteeringLookup {
        var lookup = self
        if isIPv6 && Responder.embedsIPv4(high, low) {
            lookup = SteeringLookup(high: low << 32, low: 0, isIPv6: false)
            lookup.scopeOffset = 96
        }
        lookup.node = 0
        lookup.depth = 0
        return lookup
    }

    var bits: Int { isIPv6 ? 128 : 32 }

    func trie(_ snapshot: Snapshot) -> UnsafeMutableBufferPointer<UInt32> { isIPv6 ? snapshot.trie6 : snapshot.trie4 }

    /// The ECS scope for a leaf at `depth` (0 stays 0: the answer holds for every address).
    func scope(_ depth: Int) -> Int { depth == 0 ? 0 : depth + scopeOffset }

    public init() { self.init(high: 0, low: 0, isIPv6: false) }
}

/// A located client: its answer class and the ECS scope over which that holds.
public struct SteeringLocation: Sendable {
    var classID: Int32
    var scope: Int

    public init() { self.init(classID: 0, scope: 0) }
    init(classID: Int32, scope: Int) {
        self.classID = classID
        self.scope = scope
    }
}

/// The response being written for one query.
struct Reply {
    let out: UnsafeMutablePointer<UInt8>
    let capacity: Int
    let query: UnsafePointer<UInt8>
    let transport: Transport
    let ourPayload: UInt16
    /// End of the question in the query (and in the reply); 0 until it parsed.
    var questionEnd = 0
    var hasEDNS = false
    var clientPayload: UInt16 = 0
    var ednsVersion: UInt8 = 0
    var dnssecOK = false
    var ecsStart = -1
    var ecsLength = 0
    /// The ECS scope prefix of the reply (RFC 7871 §7.2.1).
    var scope: UInt8 = 0

    init(
        out: UnsafeMutablePointer<UInt8>, capacity: Int, query: UnsafePointer<UInt8>, transport: Transport,
        ourPayload: UInt16
    ) {
        self.out = out
        self.capacity = capacity
        self.query = query
        self.transport = transport
        self.ourPayload = ourPayload
    }

    @inline(__always)
    static func u16(_ p: UnsafePointer<UInt8>) -> UInt16 { UInt16(p[0]) << 8 | UInt16(p[1]) }

    @inline(__always)
    static func put16(_ p: UnsafeMutablePointer<UInt8>, _ value: UInt16) {
        p[0] = UInt8(truncatingIfNeeded: value >> 8)
        p[1] = UInt8(truncatingIfNeeded: value)
    }

    /// The size limit: 512 octets over UDP, or the client's EDNS size capped by ours; 64 KiB over TCP.
    var limit: Int {
        if transport == .tcp { return min(capacity, 65535) }
        let size = hasEDNS ? max(512, min(Int(clientPayload), Int(ourPayload))) : 512
        return min(capacity, size)
    }

    var optLength: Int { hasEDNS ? 11 + (ecsStart >= 0 ? 4 + ecsLength : 0) : 0 }

    /// ID, opcode, RD and CD copied (RFC 1035 §4.1.1, RFC 4035 §3.1.6); QR set; RA clear.
    @inline(__always)
    func header(aa: Bool, tc: Bool, rcode: UInt16, qd: UInt16, an: UInt16, ns: UInt16, ar: UInt16) {
        out[0] = query[0]
        out[1] = query[1]
        out[2] = 0x80 | (query[2] & 0x79) | (aa ? 0x04 : 0) | (tc ? 0x02 : 0)
        out[3] = (query[3] & 0x10) | UInt8(rcode & 0xF)
        Reply.put16(out + 4, qd)
        Reply.put16(out + 6, an)
        Reply.put16(out + 8, ns)
        Reply.put16(out + 10, ar + (hasEDNS ? 1 : 0))
    }

    /// The OPT record of the reply (RFC 6891 §6.1.2), echoing ECS with our scope: 0 for a
    /// static answer, which does not depend on the client's address (RFC 7871 §7.2.1).
    @inline(__always)
    func writeOPT(at position: Int, rcode: UInt16) -> Int {
        guard hasEDNS else { return position }
        let p = out + position
        p[0] = 0
        Reply.put16(p + 1, 41)
        Reply.put16(p + 3, ourPayload)
        p[5] = UInt8(truncatingIfNeeded: rcode >> 4)
        p[6] = 0
        p[7] = dnssecOK ? 0x80 : 0
        p[8] = 0
        if ecsStart >= 0 {
            Reply.put16(p + 9, UInt16(4 + ecsLength))
            Reply.put16(p + 11, 8)
            Reply.put16(p + 13, UInt16(ecsLength))
            memcpy(p + 15, query + ecsStart, ecsLength)
            p[15 + 3] = scope
            return position + 15 + ecsLength
        }
        Reply.put16(p + 9, 0)
        return position + 11
    }

    /// An answer without records: the header, the question when it parsed, and OPT.
    func error(_ rcode: ResponseCode) -> Int {
        let echoQuestion = questionEnd > 0
        let end = echoQuestion ? questionEnd : 12
        if echoQuestion { memcpy(out + 12, query + 12, questionEnd - 12) }
        header(aa: false, tc: false, rcode: rcode.rawValue, qd: echoQuestion ? 1 : 0, an: 0, ns: 0, ar: 0)
        return writeOPT(at: end, rcode: rcode.rawValue)
    }

    /// Copies a template after the question, shifting its pointers when the query name is longer
    /// than the name it was encoded for; falls back to dropping the additional section, then to
    /// TC=1 with no records (RFC 2181 §9), when the whole does not fit.
    func answer(_ table: TemplateTable, _ index: Int, queryNameLength: Int) -> Int {
        let t = table.templates[index]
        let base = questionEnd
        let room = limit - base - optLength
        var bodyLength = Int(t.bodyLength)
        var relocationCount = Int(t.relocationCount)
        var additional = t.additionalCount
        var truncated = false
        if bodyLength > room {
            if !t.isReferral && Int(t.minimalLength) <= room {
                bodyLength = Int(t.minimalLength)
                relocationCount = Int(t.minimalRelocationCount)
                additional = 0
            } else {
                truncated = true
            }
        }
        memcpy(out + 12, query + 12, base - 12)
        let rcode = UInt16(t.rcode)
        if truncated {
            header(aa: t.authoritative, tc: true, rcode: rcode, qd: 1, an: 0, ns: 0, ar: 0)
            return writeOPT(at: base, rcode: rcode)
        }
        header(
            aa: t.authoritative, tc: false, rcode: rcode, qd: 1, an: t.answerCount, ns: t.authorityCount, ar: additional
        )
        let body = out + base
        memcpy(body, table.bodies.baseAddress! + Int(t.bodyStart), bodyLength)
        let shift = UInt16(truncatingIfNeeded: queryNameLength - Int(t.baseLength))
        if shift != 0 {
            let relocations = table.relocations.baseAddress! + Int(t.relocationStart)
            for item in 0..<relocationCount {
                let p = body + Int(relocations[item])
                Reply.put16(p, Reply.u16(p) &+ shift)
            }
        }
        return writeOPT(at: base + bodyLength, rcode: rcode)
    }
}
