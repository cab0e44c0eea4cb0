/// The EDNS Client Subnet option (RFC 7871 §6).
///
///     +---+---+---+---+---+---+---+---+---+---+---+---+---+---+---+---+
///     |                     OPTION-CODE = 8                           |
///     |                     OPTION-LENGTH                             |
///     |                        FAMILY                                 |
///     |     SOURCE PREFIX-LENGTH      |     SCOPE PREFIX-LENGTH       |
///     |                       ADDRESS...                              /
///     +---+---+---+---+---+---+---+---+---+---+---+---+---+---+---+---+
package struct ClientSubnet: Hashable, Sendable {
    public static let optionCode: UInt16 = 8

    /// 1 for IPv4, 2 for IPv6 (IANA address family numbers).
    public var family: UInt16
    public var sourcePrefixLength: UInt8
    public var scopePrefixLength: UInt8
    /// Exactly ceil(sourcePrefixLength / 8) octets.
    public var address: [UInt8]

    public init(family: UInt16, sourcePrefixLength: UInt8, scopePrefixLength: UInt8 = 0, address: [UInt8]) {
        self.family = family
        self.sourcePrefixLength = sourcePrefixLength
        self.scopePrefixLength = scopePrefixLength
        self.address = address
    }

    /// Builds the option for `address` (4 or 16 octets) truncated to `prefix` bits.
    public init(address full: [UInt8], prefix: UInt8) {
        let keep = (Int(prefix) + 7) / 8
        var bytes = Array(full.prefix(keep))
        if prefix % 8 != 0, let last = bytes.indices.last {
            bytes[last] &= UInt8(truncatingIfNeeded: 0xFF << (8 - Int(prefix % 8)))
        }
        self.init(family: full.count == 4 ? 1 : 2, sourcePrefixLength: prefix, address: bytes)
    }

    /// Validates the option data as RFC 7871 §7.1.1/§7.1.2 require (FORMERR otherwise).
    public init(optionData data: ArraySlice<UInt8>) throws(WireError) {
        guard data.count >= 4 else { throw WireError("edns.ecs", "option shorter than 4 octets") }
        let base = data.startIndex
        family = UInt16(data[base]) << 8 | UInt16(data[base + 1])
        sourcePrefixLength = data[base + 2]
        scopePrefixLength = data[base + 3]
        address = Array(data[(base + 4)...])
        let maximum: UInt8
        switch family {
        case 1: maximum = 32
        case 2: maximum = 128
        default: throw WireError("edns.ecs", "unknown address family \(family)")
        }
        guard sourcePrefixLength <= maximum else {
            throw WireError("edns.ecs", "source prefix \(sourcePrefixLength) longer than \(maximum)")
        }
        guard scopePrefixLength <= maximum else {
            throw WireError("edns.ecs", "scope prefix \(scopePrefixLength) longer than \(maximum)")
        }
        guard address.count == (Int(sourcePrefixLength) + 7) / 8 else {
            throw WireError(
                "edns.ecs",
                "address is \(address.count) octets, source prefix needs \((Int(sourcePrefixLength) + 7) / 8)")
        }
        if sourcePrefixLength % 8 != 0, let last = address.last {
            let mask = UInt8(truncatingIfNeeded: 0xFF >> Int(sourcePrefixLength % 8))
            guard last & mask == 0 else { throw WireError("edns.ecs", "address bits set beyond the source prefix") }
        }
    }

    public var optionData: [UInt8] {
        [UInt8(family >> 8), UInt8(family & 0xFF), sourcePrefixLength, scopePrefixLength] + address
    }
}

extension ClientSubnet {
    /// The SCOPE PREFIX-LENGTH of the option in a response (RFC 7871 §7.2.1): how far around
    /// the client's subnet the answer holds. The rules, all here:
    /// - an answer that is the same for every client (a static name, or a steered name's types
    ///   other than A, AAAA and ANY) has scope 0;
    /// - a query whose source prefix is 0 asked not to be located by subnet (§7.1.2): it was
    ///   located by its sender's address, and the scope stays 0;
    /// - otherwise the scope of the client's location (`locationScope`).
    /// FORMERR and BADVERS responses echo no option at all (the parser drops it), and
    /// responses to queries without the option carry none.
    @inline(__always)
    static func responseScope(sourcePrefix: UInt8, qtype: UInt16, location: SteeringLocation?) -> UInt8 {
        guard let location, sourcePrefix > 0 else { return 0 }
        let clientDependent =
            qtype == RecordType.a.rawValue || qtype == RecordType.aaaa.rawValue || qtype == RecordType.any.rawValue
        return clientDependent ? UInt8(location.scope) : 0
    }

    /// The prefix over which a location's answer class holds: the depth of its leaf in the
    /// location trie, 0 when one class covers the whole space (every address gets the same
    /// answer), and counted in IPv6 bits for an IPv4 client carried in IPv6 (IPv4-mapped or
    /// NAT64: 96 more).
    @inline(__always)
    static func locationScope(leafDepth: Int, embeddedIPv4: Bool) -> Int {
        leafDepth == 0 ? 0 : leafDepth + (embeddedIPv4 ? 96 : 0)
    }
}
