#if canImport(Glibc)
import Glibc
#endif

/// Writes the response to one query straight into the caller's buffer: the header, the echoed
/// question, a precompiled answer (`TemplateTable`) with its name pointers moved to the query
/// name's length, and the OPT record with the client subnet option.
struct ResponseWriter {
    let out: UnsafeMutablePointer<UInt8>
    let capacity: Int
    let query: UnsafePointer<UInt8>
    let transport: Transport
    let ourPayload: UInt16
    /// What the parser read: the question's end, EDNS and the client subnet option.
    let parsed: ParsedQuery
    /// The ECS scope prefix of the reply (`ClientSubnet.responseScope`).
    var scope: UInt8 = 0

    init(
        out: UnsafeMutablePointer<UInt8>, capacity: Int, query: UnsafePointer<UInt8>, transport: Transport,
        ourPayload: UInt16, parsed: ParsedQuery
    ) {
        self.out = out
        self.capacity = capacity
        self.query = query
        self.transport = transport
        self.ourPayload = ourPayload
        self.parsed = parsed
    }

    var questionEnd: Int { parsed.questionEnd }
    var hasEDNS: Bool { parsed.hasEDNS }
    var ecsStart: Int { parsed.ecsStart }
    var ecsLength: Int { parsed.ecsLength }

    @inline(__always)
    static func put16(_ p: UnsafeMutablePointer<UInt8>, _ value: UInt16) {
        p[0] = UInt8(truncatingIfNeeded: value >> 8)
        p[1] = UInt8(truncatingIfNeeded: value)
    }

    /// The size limit: 512 octets over UDP, or the client's EDNS size capped by ours; 64 KiB over TCP.
    var limit: Int {
        if transport == .tcp { return min(capacity, 65535) }
        let size = hasEDNS ? max(512, min(Int(parsed.clientPayload), Int(ourPayload))) : 512
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
        ResponseWriter.put16(out + 4, qd)
        ResponseWriter.put16(out + 6, an)
        ResponseWriter.put16(out + 8, ns)
        ResponseWriter.put16(out + 10, ar + (hasEDNS ? 1 : 0))
    }

    /// The OPT record of the reply (RFC 6891 §6.1.2), echoing ECS with our scope: 0 for a
    /// static answer, which does not depend on the client's address (RFC 7871 §7.2.1).
    @inline(__always)
    func writeOPT(at position: Int, rcode: UInt16) -> Int {
        guard hasEDNS else { return position }
        let p = out + position
        p[0] = 0
        ResponseWriter.put16(p + 1, RecordType.opt.rawValue)
        ResponseWriter.put16(p + 3, ourPayload)
        p[5] = UInt8(truncatingIfNeeded: rcode >> 4)
        p[6] = 0
        p[7] = parsed.dnssecOK ? 0x80 : 0
        p[8] = 0
        if ecsStart >= 0 {
            ResponseWriter.put16(p + 9, UInt16(4 + ecsLength))
            ResponseWriter.put16(p + 11, ClientSubnet.optionCode)
            ResponseWriter.put16(p + 13, UInt16(ecsLength))
            memcpy(p + 15, query + ecsStart, ecsLength)
            p[15 + 3] = scope
            return position + 15 + ecsLength
        }
        ResponseWriter.put16(p + 9, 0)
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
                ResponseWriter.put16(p, QueryParser.u16(p) &+ shift)
            }
        }
        return writeOPT(at: base + bodyLength, rcode: rcode)
    }
}
