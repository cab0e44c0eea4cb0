/// A domain name in uncompressed wire format (RFC 1035 §3.1), case preserved.
/// Equality and hashing ignore ASCII case (RFC 4343).
public struct DomainName: Hashable, Sendable, CustomStringConvertible {
    /// Length-prefixed labels ending with the root label (a zero octet).
    public let wire: [UInt8]

    public static let root = DomainName(uncheckedWire: [0])

    init(uncheckedWire: [UInt8]) { self.wire = uncheckedWire }

    /// Validates wire-format bytes: labels of at most 63 octets, at most 255 octets in all.
    public init(wire: [UInt8]) throws(WireError) {
        var position = 0
        while true {
            guard position < wire.count else { throw WireError("name", "missing root label") }
            let length = Int(wire[position])
            if length == 0 { break }
            guard length <= 63 else { throw WireError("name", "label longer than 63 octets") }
            position += 1 + length
        }
        guard position + 1 == wire.count else { throw WireError("name", "data after the root label") }
        guard wire.count <= 255 else { throw WireError("name", "name longer than 255 octets") }
        self.wire = wire
    }

    /// Parses presentation format (`www.Example.com.`, `\.` and `\DDD` escapes). A name without a
    /// final dot is taken relative to `origin` (the root when none is given); `@` is the origin.
    public init(_ text: String, origin: DomainName? = nil) throws(WireError) {
        if text == "@" {
            self = origin ?? .root
            return
        }
        if text == "." {
            self = .root
            return
        }
        var wire: [UInt8] = []
        var label: [UInt8] = []
        var absolute = false
        var bytes = Array(text.utf8)[...]
        func endLabel() throws(WireError) {
            guard !label.isEmpty else { throw WireError("name", "empty label in '\(text)'") }
            guard label.count <= 63 else { throw WireError("name", "label longer than 63 octets in '\(text)'") }
            wire.append(UInt8(label.count))
            wire += label
            label.removeAll(keepingCapacity: true)
        }
        while let byte = bytes.popFirst() {
            switch byte {
            case UInt8(ascii: "."):
                try endLabel()
                if bytes.isEmpty { absolute = true }
            case UInt8(ascii: "\\"):
                guard let next = bytes.popFirst() else { throw WireError("name", "dangling escape in '\(text)'") }
                if next >= UInt8(ascii: "0") && next <= UInt8(ascii: "9") {
                    guard bytes.count >= 2 else { throw WireError("name", "bad \\DDD escape in '\(text)'") }
                    let digits = [next, bytes.popFirst()!, bytes.popFirst()!]
                    guard digits.allSatisfy({ $0 >= 48 && $0 <= 57 }) else {
                        throw WireError("name", "bad \\DDD escape in '\(text)'")
                    }
                    let value = digits.reduce(0) { $0 * 10 + Int($1 - 48) }
                    guard value <= 255 else { throw WireError("name", "\\DDD escape above 255 in '\(text)'") }
                    label.append(UInt8(value))
                } else {
                    label.append(next)
                }
            default:
                label.append(byte)
            }
        }
        if !label.isEmpty { try endLabel() }
        if !absolute {
            let suffix = origin ?? .root
            wire += suffix.wire
        } else {
            wire.append(0)
        }
        guard wire.count <= 255 else { throw WireError("name", "name longer than 255 octets: '\(text)'") }
        self.wire = wire
    }

    /// The number of labels, not counting the root.
    public var labelCount: Int {
        var count = 0
        var position = 0
        while wire[position] != 0 {
            count += 1
            position += 1 + Int(wire[position])
        }
        return count
    }

    /// The name with ASCII letters folded to lower case (the lookup key).
    public var lowercased: DomainName { DomainName(uncheckedWire: DomainName.lowercase(wire)) }

    static func lowercase(_ wire: [UInt8]) -> [UInt8] {
        wire.map { $0 >= 65 && $0 <= 90 ? $0 | 0x20 : $0 }
    }

    /// The name one label up; the root's parent is nil.
    public var parent: DomainName? {
        guard wire[0] != 0 else { return nil }
        return DomainName(uncheckedWire: Array(wire[(1 + Int(wire[0]))...]))
    }

    /// `label.self`
    public func prepending(label: [UInt8]) throws(WireError) -> DomainName {
        try DomainName(wire: [UInt8(label.count)] + label + wire)
    }

    /// True when `self` equals `ancestor` or lies below it.
    public func isSubdomain(of ancestor: DomainName) -> Bool {
        let mine = DomainName.lowercase(wire)
        let theirs = DomainName.lowercase(ancestor.wire)
        guard mine.count >= theirs.count else { return false }
        // Walk label boundaries so that "xexample." is not below "example.".
        var position = 0
        while mine.count - position > theirs.count {
            position += 1 + Int(mine[position])
        }
        return mine.count - position == theirs.count && Array(mine[position...]) == theirs
    }

    public var isWildcard: Bool { wire.count >= 2 && wire[0] == 1 && wire[1] == UInt8(ascii: "*") }

    public static func == (lhs: DomainName, rhs: DomainName) -> Bool {
        lhs.wire.count == rhs.wire.count && DomainName.lowercase(lhs.wire) == DomainName.lowercase(rhs.wire)
    }

    public func hash(into hasher: inout Hasher) { hasher.combine(DomainName.lowercase(wire)) }

    public var description: String {
        if wire == [0] { return "." }
        var text = ""
        var position = 0
        while wire[position] != 0 {
            let length = Int(wire[position])
            for byte in wire[(position + 1)...(position + length)] {
                switch byte {
                case UInt8(ascii: "."), UInt8(ascii: "\\"), UInt8(ascii: "\""), UInt8(ascii: "("),
                    UInt8(ascii: ")"), UInt8(ascii: ";"), UInt8(ascii: "$"), UInt8(ascii: "@"):
                    text += "\\" + String(UnicodeScalar(byte))
                case 33...126:
                    text += String(UnicodeScalar(byte))
                default:
                    let digits = String(byte)
                    text += "\\" + String(repeating: "0", count: 3 - digits.count) + digits
                }
            }
            text += "."
            position += 1 + length
        }
        return text
    }
}
