/// A resource record (RFC 1035 §4.1.3). `rdata` holds uncompressed wire-format RDATA.
package struct ResourceRecord: Hashable, Sendable {
    public var name: DomainName
    public var type: RecordType
    public var recordClass: UInt16
    public var ttl: UInt32
    public var rdata: [UInt8]

    public init(name: DomainName, type: RecordType, recordClass: UInt16 = 1, ttl: UInt32, rdata: [UInt8]) {
        self.name = name
        self.type = type
        self.recordClass = recordClass
        self.ttl = ttl
        self.rdata = rdata
    }
}

/// The EDNS(0) pseudo-record (RFC 6891 §6.1).
package struct EDNS: Hashable, Sendable {
    public var udpPayloadSize: UInt16
    /// The upper 8 bits of the 12-bit RCODE.
    public var extendedRCode: UInt8 = 0
    public var version: UInt8 = 0
    public var dnssecOK: Bool = false
    /// Options other than ECS, in order.
    public var options: [EDNSOption] = []
    public var clientSubnet: ClientSubnet?

    public init(
        udpPayloadSize: UInt16 = 1232, version: UInt8 = 0, dnssecOK: Bool = false, clientSubnet: ClientSubnet? = nil
    ) {
        self.udpPayloadSize = udpPayloadSize
        self.version = version
        self.dnssecOK = dnssecOK
        self.clientSubnet = clientSubnet
    }
}

/// One EDNS option as code and data.
public struct EDNSOption: Hashable, Sendable {
    public var code: UInt16
    public var data: [UInt8]
    public init(code: UInt16, data: [UInt8]) {
        self.code = code
        self.data = data
    }
}

extension ResourceRecord {
    /// RDATA in presentation format for the common types; RFC 3597 `\# len hex` otherwise.
    public var rdataText: String {
        func name(_ offset: Int) -> (String, Int)? {
            var position = offset
            var bytes: [UInt8] = []
            while position < rdata.count {
                let length = Int(rdata[position])
                bytes += rdata[position...min(rdata.count - 1, position + length)]
                position += 1 + length
                if length == 0 {
                    return (try? DomainName(wire: bytes)).map { ($0.description, position) }
                }
            }
            return nil
        }
        func u16(_ at: Int) -> UInt16 { UInt16(rdata[at]) << 8 | UInt16(rdata[at + 1]) }
        func u32(_ at: Int) -> UInt32 { UInt32(u16(at)) << 16 | UInt32(u16(at + 2)) }
        switch type {
        case .a where rdata.count == 4:
            return rdata.map(String.init).joined(separator: ".")
        case .aaaa where rdata.count == 16:
            return IPv6Text.format(rdata)
        case .ns, .cname, .ptr, .dname:
            if let (text, _) = name(0) { return text }
        case .mx where rdata.count > 2:
            if let (text, _) = name(2) { return "\(u16(0)) \(text)" }
        case .srv where rdata.count > 6:
            if let (text, _) = name(6) { return "\(u16(0)) \(u16(2)) \(u16(4)) \(text)" }
        case .soa:
            if let (mname, next) = name(0), let (rname, end) = name(next), end + 20 == rdata.count {
                return "\(mname) \(rname) \(u32(end)) \(u32(end + 4)) \(u32(end + 8)) \(u32(end + 12)) \(u32(end + 16))"
            }
        case .txt:
            var parts: [String] = []
            var position = 0
            while position < rdata.count {
                let length = Int(rdata[position])
                guard position + length < rdata.count else { break }
                let chunk = rdata[(position + 1)...(position + length)].map { byte -> String in
                    if byte == UInt8(ascii: "\"") || byte == UInt8(ascii: "\\") {
                        return "\\" + String(UnicodeScalar(byte))
                    }
                    if byte >= 32 && byte < 127 { return String(UnicodeScalar(byte)) }
                    let digits = String(byte)
                    return "\\" + String(repeating: "0", count: 3 - digits.count) + digits
                }.joined()
                parts.append("\"\(chunk)\"")
                position += 1 + length
            }
            if position == rdata.count { return parts.joined(separator: " ") }
        default:
            break
        }
        return "\\# \(rdata.count)" + (rdata.isEmpty ? "" : " " + rdata.map { hex2($0) }.joined())
    }
}

func hex2(_ byte: UInt8) -> String {
    let digits = Array("0123456789abcdef")
    return String([digits[Int(byte >> 4)], digits[Int(byte & 0xF)]])
}

enum IPv6Text {
    /// RFC 5952 text form.
    static func format(_ bytes: [UInt8]) -> String {
        var groups: [UInt16] = []
        for i in stride(from: 0, to: 16, by: 2) { groups.append(UInt16(bytes[i]) << 8 | UInt16(bytes[i + 1])) }
        var bestStart = -1
        var bestLength = 0
        var index = 0
        while index < 8 {
            if groups[index] == 0 {
                var end = index
                while end < 8 && groups[end] == 0 { end += 1 }
                if end - index > bestLength && end - index > 1 {
                    bestStart = index
                    bestLength = end - index
                }
                index = end
            } else {
                index += 1
            }
        }
        func text(_ range: Range<Int>) -> String {
            groups[range].map { String($0, radix: 16) }.joined(separator: ":")
        }
        if bestStart < 0 { return text(0..<8) }
        return text(0..<bestStart) + "::" + text((bestStart + bestLength)..<8)
    }
}
