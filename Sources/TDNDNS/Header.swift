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
package struct Header: Hashable, Sendable {
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

    /// A one-bit flag of the second header word, by name: `header[.truncated]`.
    public enum Flag: UInt16, Sendable {
        case isResponse = 0x8000  // QR
        case authoritative = 0x0400  // AA
        case truncated = 0x0200  // TC
        case recursionDesired = 0x0100  // RD, copied from query to response
        case recursionAvailable = 0x0080  // RA
        case authenticData = 0x0020  // AD (RFC 4035)
        case checkingDisabled = 0x0010  // CD (RFC 4035), copied from query to response
    }

    public subscript(flag: Flag) -> Bool {
        get { flags & flag.rawValue != 0 }
        set { flags = newValue ? flags | flag.rawValue : flags & ~flag.rawValue }
    }

    public var opcode: UInt8 {
        get { UInt8((flags >> 11) & 0xF) }
        set { flags = (flags & ~0x7800) | (UInt16(newValue & 0xF) << 11) }
    }
    /// The low four bits of the RCODE; the rest is in the OPT record.
    public var rcodeLow: UInt8 {
        get { UInt8(flags & 0xF) }
        set { flags = (flags & ~0xF) | UInt16(newValue & 0xF) }
    }
}
