import Yams

/// One node of a YAML configuration file with the place it was written: what every loader
/// reads, so that no loader handles the YAML library's types or marks itself. Plain data
/// (`Sendable`), so a part of a file can be kept for another component to read (a policy keeps
/// each site's `probe:` section for the probes).
public struct ConfigValue: Hashable, Sendable {
    public enum Content: Hashable, Sendable {
        case scalar(Scalar)
        case sequence([ConfigValue])
        case mapping([Entry])
    }

    /// A scalar as written, with the YAML core schema's readings of it.
    public struct Scalar: Hashable, Sendable {
        public var text: String
        public var int: Int?
        public var number: Double?
        public var bool: Bool?
        public var isNull: Bool
    }

    public struct Entry: Hashable, Sendable {
        public var key: ConfigValue
        public var value: ConfigValue
    }

    public var content: Content
    public var line: Int
    public var column: Int

    init(_ node: Node) {
        line = node.mark?.line ?? 0
        column = node.mark?.column ?? 0
        switch node {
        case .scalar(let scalar):
            content = .scalar(
                Scalar(
                    text: scalar.string, int: node.int, number: node.float, bool: node.bool, isNull: node.null != nil))
        case .sequence(let items):
            content = .sequence(items.map(ConfigValue.init))
        case .mapping(let pairs):
            content = .mapping(pairs.map { Entry(key: ConfigValue($0.key), value: ConfigValue($0.value)) })
        case .alias:
            // Aliases are read as nothing at all; a setting given one gets the usual "expected" error.
            content = .scalar(Scalar(text: "", int: nil, number: nil, bool: nil, isNull: true))
        }
    }

    /// The text of a scalar (also of one that reads as a number or null).
    public var string: String? {
        if case .scalar(let scalar) = content { return scalar.text }
        return nil
    }
    public var int: Int? {
        if case .scalar(let scalar) = content { return scalar.int }
        return nil
    }
    /// A number, integer or not.
    public var number: Double? {
        if case .scalar(let scalar) = content { return scalar.number ?? scalar.int.map(Double.init) }
        return nil
    }
    public var isNull: Bool {
        if case .scalar(let scalar) = content { return scalar.isNull }
        return false
    }
    public var sequence: [ConfigValue]? {
        if case .sequence(let items) = content { return items }
        return nil
    }
    public var mapping: [Entry]? {
        if case .mapping(let entries) = content { return entries }
        return nil
    }
    /// The items of a sequence, or the value itself as a list of one.
    public var items: [ConfigValue] { sequence ?? [self] }
}

/// The entries of a mapping in file order, looked up by key.
public struct ConfigMapping: Sendable, Sequence {
    public let entries: [(key: String, value: ConfigValue)]

    public init(_ entries: [(key: String, value: ConfigValue)]) { self.entries = entries }

    public subscript(key: String) -> ConfigValue? { entries.first { $0.key == key }?.value }
    public func makeIterator() -> IndexingIterator<[(key: String, value: ConfigValue)]> { entries.makeIterator() }
    public var isEmpty: Bool { entries.isEmpty }
}

/// A part of a file left for another component to read: its key path and its value.
public struct ConfigSection: Hashable, Sendable {
    public var key: String
    public var value: ConfigValue
    public init(key: String, value: ConfigValue) { (self.key, self.value) = (key, value) }
}
