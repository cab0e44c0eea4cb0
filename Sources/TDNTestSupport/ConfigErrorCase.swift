/// One row of a configuration test table: a file's text and every `file:line: message` a load
/// of it must report (STYLE: config tests are tables).
public struct ConfigErrorCase: CustomStringConvertible, Sendable {
    public var label: String
    public var text: String
    public var errors: [String]

    public init(label: String, text: String, errors: [String]) {
        self.label = label
        self.text = text
        self.errors = errors
    }

    public var description: String { label }
}
