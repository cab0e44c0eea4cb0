/// What the parser learnt about one query: where its question ends, its type and class, and
/// its EDNS state. Plain numbers (offsets into the query), so it is kept and copied freely: a
/// deferred steered query carries it to its second pass, which then only writes.
package struct ParsedQuery: Sendable {
    /// End of the question in the query (and in the reply); 0 while the question has not parsed.
    var questionEnd = 0
    /// Length of the lower-cased query name (with the root label) and its number of labels.
    var nameLength = 0
    var labelCount = 0
    var qtype: UInt16 = 0
    var qclass: UInt16 = 0
    /// Opcode QUERY (RFC 1035 §4.1.1); other opcodes get NOTIMP.
    var isQuery = false
    var hasEDNS = false
    var clientPayload: UInt16 = 0
    var ednsVersion: UInt8 = 0
    var dnssecOK = false
    /// The client subnet option's data in the query (RFC 7871 §6), -1 without one.
    var ecsStart = -1
    var ecsLength = 0

    public init() {}

    /// The ECS source prefix length (0 without the option).
    @inline(__always)
    func sourcePrefix(_ query: UnsafePointer<UInt8>) -> UInt8 { ecsStart >= 0 ? query[ecsStart + 2] : 0 }
}

/// The parser's verdict.
enum QueryParse {
    /// Not answered at all: too short to carry an ID, or itself a response (RFC 1035 §4.1.1).
    case drop
    /// Answered with this RCODE and no records, echoing what `parsed` holds so far.
    case error(ResponseCode, ParsedQuery)
    case query(ParsedQuery)
}

/// Reads a query in place, without allocating: the header, the one question (its name copied
/// lower-cased into `name`, each label's start into `labelStarts`, for the lookup), and the
/// additional section's OPT record with its client subnet option.
struct QueryParser {
    /// Room for the longest name (255 octets) and its labels (at most 128, and the root).
    let name: UnsafeMutablePointer<UInt8>
    let labelStarts: UnsafeMutablePointer<Int>

    static let nameCapacity = 256
    static let labelCapacity = 130
    /// Header length (RFC 1035 §4.1.1) and the fixed part of a resource record after its owner.
    static let headerLength = 12
    static let recordFixedLength = 10

    @inline(__always)
    static func u16(_ p: UnsafePointer<UInt8>) -> UInt16 { UInt16(p[0]) << 8 | UInt16(p[1]) }

    func parse(_ q: UnsafePointer<UInt8>, count n: Int) -> QueryParse {
        guard n >= Self.headerLength, q[2] & 0x80 == 0 else { return .drop }
        var parsed = ParsedQuery()
        parsed.isQuery = (q[2] >> 3) & 0xF == 0
        // Exactly one question; more or none is FORMERR for a query (NOTIMP for other opcodes,
        // which we do not implement whatever they carry).
        if Self.u16(q + 4) != 1 { return .error(parsed.isQuery ? .formErr : .notImp, parsed) }

        // Question: labels are copied lower-cased for the lookup; the original bytes are echoed.
        var position = Self.headerLength
        var length = 0
        var labels = 0
        while true {
            guard position < n else { return .error(.formErr, parsed) }
            let labelLength = Int(q[position])
            if labelLength == 0 { break }
            // 0x40/0x80 label types are undefined and a pointer cannot appear in the first
            // name of a message: both are malformed here.
            guard labelLength <= 63, position + 1 + labelLength < n, length + 1 + labelLength < 255 else {
                return .error(.formErr, parsed)
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
        guard position + 4 <= n else { return .error(.formErr, parsed) }
        parsed.qtype = Self.u16(q + position)
        parsed.qclass = Self.u16(q + position + 2)
        position += 4
        parsed.questionEnd = position
        parsed.nameLength = length
        parsed.labelCount = labels

        // NSD's rule: a query carries nothing in the answer and authority sections (NOTIFY
        // and UPDATE do; their records are skipped on the way to the OPT).
        let skipped = Int(Self.u16(q + 6)) + Int(Self.u16(q + 8))
        if parsed.isQuery && skipped != 0 { return .error(.formErr, parsed) }

        // Additional section: find the OPT record (RFC 6891 §6.1.1) and skip anything else.
        let records = skipped + Int(Self.u16(q + 10))
        for record in 0..<records {
            let ownerStart = position
            while true {
                guard position < n else { return .error(.formErr, parsed) }
                let byte = Int(q[position])
                if byte == 0 {
                    position += 1
                    break
                }
                if byte & 0xC0 == 0xC0 {
                    position += 2
                    break
                }
                guard byte <= 63 else { return .error(.formErr, parsed) }
                position += 1 + byte
            }
            guard position + Self.recordFixedLength <= n else { return .error(.formErr, parsed) }
            let type = Self.u16(q + position)
            let rdataStart = position + Self.recordFixedLength
            let rdataEnd = rdataStart + Int(Self.u16(q + position + 8))
            guard rdataEnd <= n else { return .error(.formErr, parsed) }
            if type == RecordType.opt.rawValue && record >= skipped {
                // One OPT, owned by the root (RFC 6891 §6.1.1); more is FORMERR.
                if parsed.hasEDNS || position - ownerStart != 1 { return .error(.formErr, parsed) }
                parsed.hasEDNS = true
                parsed.clientPayload = Self.u16(q + position + 2)
                parsed.ednsVersion = q[position + 5]
                parsed.dnssecOK = q[position + 6] & 0x80 != 0
                if !Self.readOptions(q, rdataStart, rdataEnd, into: &parsed) {
                    // A malformed option: FORMERR with OPT, but no ECS echoed.
                    parsed.ecsStart = -1
                    return .error(.formErr, parsed)
                }
            }
            position = rdataEnd
        }
        // RFC 6891 §6.1.3: only version 0 is implemented (BADVERS, no ECS echoed).
        if parsed.hasEDNS && parsed.ednsVersion > 0 {
            parsed.ecsStart = -1
            return .error(.badVers, parsed)
        }
        return .query(parsed)
    }

    /// The options of an OPT record: their lengths must add up, and one client subnet option
    /// at most, well-formed (`validClientSubnet`). False when the options are malformed.
    @inline(__always)
    private static func readOptions(
        _ q: UnsafePointer<UInt8>, _ start: Int, _ end: Int, into parsed: inout ParsedQuery
    ) -> Bool {
        var option = start
        while option < end {
            guard option + 4 <= end else { return false }
            let code = u16(q + option)
            let optionLength = Int(u16(q + option + 2))
            guard option + 4 + optionLength <= end else { return false }
            if code == ClientSubnet.optionCode {
                if parsed.ecsStart >= 0 || !validClientSubnet(q + option + 4, optionLength) { return false }
                parsed.ecsStart = option + 4
                parsed.ecsLength = optionLength
            }
            option += 4 + optionLength
        }
        return true
    }

    /// RFC 7871 §6 and §7.1.2: known family, prefix within the family, exactly the octets the
    /// prefix needs, and no address bits set beyond it.
    @inline(__always)
    static func validClientSubnet(_ p: UnsafePointer<UInt8>, _ length: Int) -> Bool {
        guard length >= 4 else { return false }
        let family = u16(p)
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
