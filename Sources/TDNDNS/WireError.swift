/// Why a DNS message could not be read. The parser names the field that failed
/// (`"question.qname: label longer than 63 octets"`).
public struct WireError: Error, Sendable, CustomStringConvertible {
    public let field: String
    public let message: String

    public init(_ field: String, _ message: String) {
        self.field = field
        self.message = message
    }

    public var description: String { "\(field): \(message)" }
}
