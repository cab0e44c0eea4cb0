import Yams

/// Reads a YAML configuration file: typed, range-checked accessors that record every problem
/// as a `ConfigError` at the value's line and carry on, so that one load reports all of them.
/// Every loader (daemon settings, policy, probe settings) reads through one of these.
public struct ConfigReader: Sendable {
    public let file: String
    public private(set) var errors: [ConfigError] = []

    public init(file: String) { self.file = file }

    /// The root of `text`, nil for an empty document; a syntax error is the only error.
    public static func parse(_ text: String, file: String) -> Result<ConfigValue?, ConfigErrors> {
        do {
            return .success(try Yams.compose(yaml: text).map(ConfigValue.init))
        } catch let error as YamlError {
            var line = 0
            switch error {
            case .scanner(_, _, let mark, _), .parser(_, _, let mark, _), .composer(_, _, let mark, _): line = mark.line
            default: break
            }
            return .failure(ConfigErrors([ConfigError(file: file, line: line, message: "YAML: \(error)")]))
        } catch {
            return .failure(ConfigErrors([ConfigError(file: file, line: 0, message: "YAML: \(error)")]))
        }
    }

    /// Reads and parses the file at `path`; `what` names it in the error when it cannot be read
    /// ("the policy file").
    public static func load(path: String, what: String) -> Result<ConfigValue?, ConfigErrors> {
        guard let bytes = readWholeFile(path) else {
            return .failure(ConfigErrors([ConfigError(file: path, line: 0, message: "cannot read \(what)")]))
        }
        return parse(String(decoding: bytes, as: UTF8.self), file: path)
    }

    public var failure: ConfigErrors? { errors.isEmpty ? nil : ConfigErrors(errors) }

    /// Records a problem with `value` (nil: the file as a whole) under the setting `key`.
    public mutating func fail(_ value: ConfigValue?, _ key: String?, _ message: String) {
        errors.append(
            ConfigError(file: file, line: value?.line ?? 0, column: value?.column ?? 0, key: key, message: message))
    }

    public mutating func add(_ more: [ConfigError]) { errors += more }

    /// The entries of a mapping, complaining about keys not in `known` (empty: any key).
    public mutating func entries(_ value: ConfigValue, _ key: String, known: Set<String> = []) -> ConfigMapping {
        guard let mapping = value.mapping else {
            fail(value, key, "expected a mapping")
            return ConfigMapping([])
        }
        var result: [(key: String, value: ConfigValue)] = []
        for entry in mapping {
            let name = entry.key.string ?? ""
            if !known.isEmpty && !known.contains(name) {
                fail(entry.key, key, "unknown key '\(name)'")
                continue
            }
            result.append((name, entry.value))
        }
        return ConfigMapping(result)
    }

    /// Non-empty text.
    public mutating func string(_ value: ConfigValue?, _ key: String, expected: String = "expected text") -> String? {
        guard let value else { return nil }
        guard let text = value.string, !text.isEmpty else {
            fail(value, key, expected)
            return nil
        }
        return text
    }

    /// A secret (token, key) of at least `minimum` characters; `what` names it in the error.
    public mutating func secret(_ value: ConfigValue?, _ key: String, what: String, minimum: Int = 16) -> String? {
        guard let value else { return nil }
        guard let text = value.string, text.count >= minimum else {
            fail(value, key, "expected \(what) of at least \(minimum) characters")
            return nil
        }
        return text
    }

    /// A list of non-empty texts (a single text is a list of one).
    public mutating func strings(_ value: ConfigValue?, _ key: String) -> [String]? {
        guard let value else { return nil }
        var result: [String] = []
        for item in value.items {
            if let text = item.string, !text.isEmpty {
                result.append(text)
            } else {
                fail(item, key, "expected a list of names")
            }
        }
        return result
    }

    /// A number in `range`.
    public mutating func number(_ value: ConfigValue?, _ key: String, _ range: ClosedRange<Double>) -> Double? {
        guard let value else { return nil }
        guard let number = value.number, range.contains(number) else {
            fail(
                value, key,
                "expected a number from \(formatNumber(range.lowerBound)) to \(formatNumber(range.upperBound))")
            return nil
        }
        return number
    }

    /// A whole number in `range`.
    public mutating func integer(_ value: ConfigValue?, _ key: String, _ range: ClosedRange<Int>) -> Int? {
        guard let value else { return nil }
        guard let number = value.int, range.contains(number) else {
            fail(value, key, "expected a whole number from \(range.lowerBound) to \(range.upperBound)")
            return nil
        }
        return number
    }
}

/// `3` for 3.0, `0.5` for 0.5: numbers as an operator wrote them.
public func formatNumber(_ value: Double) -> String {
    value == value.rounded() && abs(value) < 1e15 ? String(Int(value)) : String(value)
}
