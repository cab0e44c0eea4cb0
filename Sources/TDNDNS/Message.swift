/// A whole DNS message, decoded for inspection (our client, tests and tools). The server's
/// query path does not use this type: it reads queries in place (`QueryParser`).
package struct Message: Hashable, Sendable {
    public var header: Header
    public var questions: [Question] = []
    public var answers: [ResourceRecord] = []
    public var authority: [ResourceRecord] = []
    /// The additional section without the OPT record, which is in `edns`.
    public var additional: [ResourceRecord] = []
    public var edns: EDNS?

    public init(header: Header, questions: [Question] = [], edns: EDNS? = nil) {
        self.header = header
        self.questions = questions
        self.edns = edns
    }

    /// The full 12-bit RCODE (header bits plus the OPT's extended bits).
    public var rcode: ResponseCode {
        ResponseCode(rawValue: UInt16(edns?.extendedRCode ?? 0) << 4 | UInt16(header.rcodeLow))
    }

    /// A query for `name`/`type`, optionally with EDNS.
    public static func query(
        _ name: DomainName, _ type: RecordType, id: UInt16 = .random(in: 0...UInt16.max),
        recursionDesired: Bool = false, edns: EDNS? = EDNS()
    ) -> Message {
        var header = Header(id: id)
        header[.recursionDesired] = recursionDesired
        return Message(header: header, questions: [Question(name: name, type: type)], edns: edns)
    }
}

/// Reads big-endian integers and compressed names from a message, throwing `WireError`.
struct WireReader {
    let bytes: [UInt8]
    var position = 0

    init(_ bytes: [UInt8]) { self.bytes = bytes }

    var remaining: Int { bytes.count - position }

    mutating func u8(_ field: String) throws(WireError) -> UInt8 {
        guard position < bytes.count else { throw WireError(field, "message ends early") }
        defer { position += 1 }
        return bytes[position]
    }

    mutating func u16(_ field: String) throws(WireError) -> UInt16 {
        guard position + 2 <= bytes.count else { throw WireError(field, "message ends early") }
        defer { position += 2 }
        return UInt16(bytes[position]) << 8 | UInt16(bytes[position + 1])
    }

    mutating func u32(_ field: String) throws(WireError) -> UInt32 {
        let high = try u16(field)
        return UInt32(high) << 16 | UInt32(try u16(field))
    }

    mutating func take(_ count: Int, _ field: String) throws(WireError) -> [UInt8] {
        guard count >= 0, position + count <= bytes.count else { throw WireError(field, "message ends early") }
        defer { position += count }
        return Array(bytes[position..<(position + count)])
    }

    /// Reads a possibly compressed name (RFC 1035 §4.1.4); pointers must point backwards.
    mutating func name(_ field: String) throws(WireError) -> DomainName {
        var wire: [UInt8] = []
        var cursor = position
        var jumped = false
        var lowestTarget = position
        while true {
            guard cursor < bytes.count else { throw WireError(field, "name runs past the end") }
            let length = bytes[cursor]
            switch length & 0xC0 {
            case 0x00:
                if length == 0 {
                    wire.append(0)
                    if !jumped { position = cursor + 1 }
                    guard wire.count <= 255 else { throw WireError(field, "name longer than 255 octets") }
                    return DomainName(uncheckedWire: wire)
                }
                guard cursor + 1 + Int(length) <= bytes.count else { throw WireError(field, "label runs past the end") }
                wire += bytes[cursor...(cursor + Int(length))]
                guard wire.count <= 255 else { throw WireError(field, "name longer than 255 octets") }
                cursor += 1 + Int(length)
            case 0xC0:
                guard cursor + 1 < bytes.count else { throw WireError(field, "pointer runs past the end") }
                let target = Int(length & 0x3F) << 8 | Int(bytes[cursor + 1])
                // Each pointer must go strictly backwards, which rules out loops.
                guard target < lowestTarget else {
                    throw WireError(field, "compression pointer does not point backwards")
                }
                lowestTarget = target
                if !jumped { position = cursor + 2 }
                jumped = true
                cursor = target
            default:
                throw WireError(field, "unknown label type 0x\(hex2(length & 0xC0))")
            }
        }
    }
}

extension Message {
    /// Decodes a complete message, decompressing names in the RDATA of the types that may be
    /// compressed (RFC 3597 §4) and SRV.
    public init(decoding bytes: [UInt8]) throws(WireError) {
        var reader = WireReader(bytes)
        var header = Header(id: try reader.u16("header.id"), flags: try reader.u16("header.flags"))
        header.questionCount = try reader.u16("header.qdcount")
        header.answerCount = try reader.u16("header.ancount")
        header.authorityCount = try reader.u16("header.nscount")
        header.additionalCount = try reader.u16("header.arcount")
        self.init(header: header)
        for _ in 0..<header.questionCount {
            let name = try reader.name("question.qname")
            let type = RecordType(try reader.u16("question.qtype"))
            questions.append(Question(name: name, type: type, recordClass: try reader.u16("question.qclass")))
        }
        for _ in 0..<header.answerCount { answers.append(try Self.record(&reader, "answer")) }
        for _ in 0..<header.authorityCount { authority.append(try Self.record(&reader, "authority")) }
        for _ in 0..<header.additionalCount {
            let record = try Self.record(&reader, "additional")
            if record.type == .opt {
                guard edns == nil else { throw WireError("additional.opt", "more than one OPT record") }
                edns = try Self.edns(from: record)
            } else {
                additional.append(record)
            }
        }
    }

    private static func record(_ reader: inout WireReader, _ section: String) throws(WireError) -> ResourceRecord {
        let name = try reader.name("\(section).name")
        let type = RecordType(try reader.u16("\(section).type"))
        let recordClass = try reader.u16("\(section).class")
        let ttl = try reader.u32("\(section).ttl")
        let length = Int(try reader.u16("\(section).rdlength"))
        guard length <= reader.remaining else { throw WireError("\(section).rdata", "rdlength past the end") }
        let end = reader.position + length
        var rdata: [UInt8]
        switch type {
        case .ns, .cname, .ptr, .dname:
            rdata = try reader.name("\(section).rdata").wire
        case .mx:
            rdata = try reader.take(2, "\(section).rdata") + reader.name("\(section).rdata").wire
        case .srv:
            rdata = try reader.take(6, "\(section).rdata") + reader.name("\(section).rdata").wire
        case .soa:
            rdata = try reader.name("\(section).rdata").wire + reader.name("\(section).rdata").wire
            rdata += try reader.take(20, "\(section).rdata")
        default:
            rdata = try reader.take(length, "\(section).rdata")
        }
        guard reader.position == end else { throw WireError("\(section).rdata", "rdata does not match rdlength") }
        return ResourceRecord(name: name, type: type, recordClass: recordClass, ttl: ttl, rdata: rdata)
    }

    private static func edns(from record: ResourceRecord) throws(WireError) -> EDNS {
        guard record.name == .root else { throw WireError("additional.opt", "owner is not the root") }
        var edns = EDNS(udpPayloadSize: record.recordClass)
        edns.extendedRCode = UInt8(record.ttl >> 24)
        edns.version = UInt8((record.ttl >> 16) & 0xFF)
        edns.dnssecOK = record.ttl & 0x8000 != 0
        var position = 0
        let data = record.rdata
        while position < data.count {
            guard position + 4 <= data.count else { throw WireError("additional.opt", "truncated option header") }
            let code = UInt16(data[position]) << 8 | UInt16(data[position + 1])
            let length = Int(data[position + 2]) << 8 | Int(data[position + 3])
            guard position + 4 + length <= data.count else {
                throw WireError("additional.opt", "option runs past the end")
            }
            let body = data[(position + 4)..<(position + 4 + length)]
            if code == ClientSubnet.optionCode {
                edns.clientSubnet = try ClientSubnet(optionData: body)
            } else {
                edns.options.append(EDNSOption(code: code, data: Array(body)))
            }
            position += 4 + length
        }
        return edns
    }

    /// Encodes the message without name compression (queries, tests).
    public func encoded() -> [UInt8] {
        var out: [UInt8] = []
        func u16(_ value: UInt16) { out += [UInt8(value >> 8), UInt8(value & 0xFF)] }
        func u32(_ value: UInt32) {
            u16(UInt16(value >> 16))
            u16(UInt16(value & 0xFFFF))
        }
        func record(_ r: ResourceRecord) {
            out += r.name.wire
            u16(r.type.rawValue)
            u16(r.recordClass)
            u32(r.ttl)
            u16(UInt16(r.rdata.count))
            out += r.rdata
        }
        u16(header.id)
        u16(header.flags)
        u16(UInt16(questions.count))
        u16(UInt16(answers.count))
        u16(UInt16(authority.count))
        u16(UInt16(additional.count + (edns == nil ? 0 : 1)))
        for q in questions {
            out += q.name.wire
            u16(q.type.rawValue)
            u16(q.recordClass)
        }
        answers.forEach(record)
        authority.forEach(record)
        additional.forEach(record)
        if let edns {
            var data: [UInt8] = []
            var options = edns.options
            if let ecs = edns.clientSubnet {
                options.append(EDNSOption(code: ClientSubnet.optionCode, data: ecs.optionData))
            }
            for option in options {
                data += [UInt8(option.code >> 8), UInt8(option.code & 0xFF)]
                data += [UInt8(option.data.count >> 8), UInt8(option.data.count & 0xFF)]
                data += option.data
            }
            let ttl = UInt32(edns.extendedRCode) << 24 | UInt32(edns.version) << 16 | (edns.dnssecOK ? 0x8000 : 0)
            record(ResourceRecord(name: .root, type: .opt, recordClass: edns.udpPayloadSize, ttl: ttl, rdata: data))
        }
        return out
    }
}
