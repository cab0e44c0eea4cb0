/// The 12-octet message header (RFC 1035 §4.1.1).
///
///                                     1  1  1  1  1  1
///       0  1  2  3  4  5  6  7  8  9  0  1  2  3  4  5
///     +--+--+--+--+--+--+--+--+--+--+--+--+--+--+--+--+
///     |                      ID                       |
///     |QR|   Opcode  |AA|TC|RD|RA| Z|AD|CD|   RCODE   |
///     |                    QDCOUNT                    |
///     |                    ANCOUNT                    |
///     |                    NSCOUNT                    |
///     |                    ARCOUNT                    |
///     +--+--+--+--+--+--+--+--+--+--+--+--+--+--+--+--+
public struct Header: Hashable, Sendable {
    public var id: UInt16 = 0
    public var flags: UInt16 = 0
    public var questionCount: UInt16 = 0
    public var answerCount: UInt16 = 0
    public var authorityCount: UInt16 = 0
    public var additionalCount: UInt16 = 0

    public init(id: UInt16 = 0, flags: UInt16 = 0) {
        self.id = id
        self.flags = flags
    }

    static let qrBit: UInt16 = 0x8000
    static let aaBit: UInt16 = 0x0400
    static let tcBit: UInt16 = 0x0200
    static let rdBit: UInt16 = 0x0100
    static let raBit: UInt16 = 0x0080
    static let adBit: UInt16 = 0x0020
    static let cdBit: UInt16 = 0x0010

    private func bit(_ mask: UInt16) -> Bool { flags & mask != 0 }
    private mutating func set(_ mask: UInt16, _ on: Bool) { flags = on ? flags | mask : flags & ~mask }

    public var isResponse: Bool {
        get { bit(Self.qrBit) }
        set { set(Self.qrBit, newValue) }
    }
    public var opcode: UInt8 {
        get { UInt8((flags >> 11) & 0xF) }
        set { flags = (flags & ~0x7800) | (UInt16(newValue & 0xF) << 11) }
    }
    public var authoritative: Bool {
        get { bit(Self.aaBit) }
        set { set(Self.aaBit, newValue) }
    }
    public var truncated: Bool {
        get { bit(Self.tcBit) }
        set { set(Self.tcBit, newValue) }
    }
    public var recursionDesired: Bool {
        get { bit(Self.rdBit) }
        set { set(Self.rdBit, newValue) }
    }
    public var recursionAvailable: Bool {
        get { bit(Self.raBit) }
        set { set(Self.raBit, newValue) }
    }
    public var authenticData: Bool {
        get { bit(Self.adBit) }
        set { set(Self.adBit, newValue) }
    }
    public var checkingDisabled: Bool {
        get { bit(Self.cdBit) }
        set { set(Self.cdBit, newValue) }
    }
    /// The low four bits of the RCODE; the rest is in the OPT record.
    public var rcodeLow: UInt8 {
        get { UInt8(flags & 0xF) }
        set { flags = (flags & ~0xF) | UInt16(newValue & 0xF) }
    }
}
