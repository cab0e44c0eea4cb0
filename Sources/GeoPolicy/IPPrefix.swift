#if canImport(Glibc)
import Glibc
#endif

/// An IPv4 or IPv6 network: address bytes (4 or 16) with the bits past `length` zero.
public struct IPPrefix: Hashable, Sendable, CustomStringConvertible {
    public var address: [UInt8]
    public var length: Int

    public init(address: [UInt8], length: Int) {
        self.address = IPPrefix.masked(address, length)
        self.length = length
    }

    /// `192.0.2.0/24`, `2001:db8::/32`, or a bare address (a host prefix).
    public init?(_ text: String) {
        let parts = text.split(separator: "/", maxSplits: 1)
        guard let first = parts.first, let address = IPPrefix.parseAddress(String(first)) else { return nil }
        let maximum = address.count * 8
        var length = maximum
        if parts.count == 2 {
            guard let value = Int(parts[1]), (0...maximum).contains(value) else { return nil }
            length = value
        }
        self.init(address: address, length: length)
    }

    public var isIPv4: Bool { address.count == 4 }

    /// 4 or 16 octets from text, without name lookups.
    public static func parseAddress(_ text: String) -> [UInt8]? {
        if text.contains(":") {
            var raw = in6_addr()
            guard inet_pton(AF_INET6, text, &raw) == 1 else { return nil }
            return withUnsafeBytes(of: raw) { Array($0) }
        }
        var raw = in_addr()
        guard inet_pton(AF_INET, text, &raw) == 1 else { return nil }
        return withUnsafeBytes(of: raw) { Array($0) }
    }

    static func masked(_ bytes: [UInt8], _ length: Int) -> [UInt8] {
        bytes.enumerated().map { index, byte in
            let keep = length - index * 8
            if keep >= 8 { return byte }
            if keep <= 0 { return 0 }
            return byte & UInt8(truncatingIfNeeded: 0xFF << (8 - keep))
        }
    }

    public func contains(_ other: [UInt8]) -> Bool {
        other.count == address.count && IPPrefix.masked(other, length) == address
    }

    /// Whether `other` lies inside this network.
    public func contains(_ other: IPPrefix) -> Bool { other.length >= length && contains(other.address) }

    public var description: String { "\(IPPrefix.format(address))/\(length)" }

    public static func format(_ bytes: [UInt8]) -> String {
        var buffer = [CChar](repeating: 0, count: 64)
        let family = bytes.count == 4 ? AF_INET : AF_INET6
        _ = bytes.withUnsafeBytes { inet_ntop(family, $0.baseAddress, &buffer, 64) }
        return String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }
}

/// The spellings of one IPv4 client inside IPv6: IPv4-mapped (::ffff:0:0/96) and the NAT64
/// well-known prefix (64:ff9b::/96, RFC 6052) both locate as the IPv4 address they carry.
public enum IPv4InIPv6 {
    static let mapped: [UInt8] = [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xFF, 0xFF]
    static let nat64: [UInt8] = [0, 0x64, 0xFF, 0x9B, 0, 0, 0, 0, 0, 0, 0, 0]

    /// The embedded IPv4 address, or nil for a native IPv6 address.
    public static func embedded(_ address: [UInt8]) -> [UInt8]? {
        guard address.count == 16 else { return nil }
        let head = Array(address[0..<12])
        return head == mapped || head == nat64 ? Array(address[12..<16]) : nil
    }
}
