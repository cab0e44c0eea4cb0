/// One sample of the Prometheus text exposition format (version 0.0.4).
public struct MetricSample: Hashable, Sendable {
    public var name: String
    public var labels: [String: String]
    public var value: Double
    /// Milliseconds since the epoch, when the line carries one.
    public var timestamp: Int64?
}

/// A line that is not valid exposition format, with its 1-based line number.
public struct ExpositionError: Error, Hashable, Sendable, CustomStringConvertible {
    public var line: Int
    public var message: String
    public var description: String { "line \(line): \(message)" }
}

/// Parses the Prometheus text exposition format, as inference engines serve it on `/metrics`:
/// `# HELP` / `# TYPE` and other comments, samples `name{label="value",…} value [timestamp]`,
/// label values with `\\`, `\"` and `\n` escapes, and the values `NaN`, `+Inf` and `-Inf`.
public enum ExpositionParser {
    public static func parse(_ text: String) throws(ExpositionError) -> [MetricSample] {
        var samples: [MetricSample] = []
        var number = 0
        for line in text.split(separator: "\n", omittingEmptySubsequences: false) {
            number += 1
            let trimmed = line.drop(while: { $0 == " " || $0 == "\t" })
            if trimmed.isEmpty || trimmed.hasPrefix("#") { continue }
            samples.append(try sample(Array(trimmed.utf8), line: number))
        }
        return samples
    }

    private static func sample(_ bytes: [UInt8], line: Int) throws(ExpositionError) -> MetricSample {
        var index = 0
        func fail(_ message: String) -> ExpositionError { ExpositionError(line: line, message: message) }
        func isNameByte(_ byte: UInt8, first: Bool) -> Bool {
            (byte >= 97 && byte <= 122) || (byte >= 65 && byte <= 90) || byte == 95 || byte == 58
                || (!first && byte >= 48 && byte <= 57)
        }
        func skipSpaces() { while index < bytes.count && (bytes[index] == 32 || bytes[index] == 9) { index += 1 } }
        let nameStart = index
        while index < bytes.count && isNameByte(bytes[index], first: index == nameStart) { index += 1 }
        guard index > nameStart else { throw fail("expected a metric name") }
        let name = String(decoding: bytes[nameStart..<index], as: UTF8.self)
        var labels: [String: String] = [:]
        skipSpaces()
        if index < bytes.count && bytes[index] == UInt8(ascii: "{") {
            index += 1
            while true {
                skipSpaces()
                guard index < bytes.count else { throw fail("labels not closed") }
                if bytes[index] == UInt8(ascii: "}") {
                    index += 1
                    break
                }
                let labelStart = index
                while index < bytes.count && isNameByte(bytes[index], first: index == labelStart) && bytes[index] != 58
                { index += 1 }
                guard index > labelStart else { throw fail("expected a label name") }
                let label = String(decoding: bytes[labelStart..<index], as: UTF8.self)
                skipSpaces()
                guard index < bytes.count, bytes[index] == UInt8(ascii: "=") else {
                    throw fail("expected '=' after label \(label)")
                }
                index += 1
                skipSpaces()
                guard index < bytes.count, bytes[index] == UInt8(ascii: "\"") else {
                    throw fail("expected a quoted value for label \(label)")
                }
                index += 1
                var value: [UInt8] = []
                while true {
                    guard index < bytes.count else { throw fail("value of label \(label) not closed") }
                    let byte = bytes[index]
                    index += 1
                    if byte == UInt8(ascii: "\"") { break }
                    if byte == UInt8(ascii: "\\") {
                        guard index < bytes.count else { throw fail("dangling escape in label \(label)") }
                        let escaped = bytes[index]
                        index += 1
                        switch escaped {
                        case UInt8(ascii: "n"): value.append(10)
                        case UInt8(ascii: "\\"), UInt8(ascii: "\""): value.append(escaped)
                        default: throw fail("unknown escape \\\(String(UnicodeScalar(escaped))) in label \(label)")
                        }
                    } else {
                        value.append(byte)
                    }
                }
                labels[label] = String(decoding: value, as: UTF8.self)
                skipSpaces()
                if index < bytes.count && bytes[index] == UInt8(ascii: ",") {
                    index += 1
                } else if index >= bytes.count || bytes[index] != UInt8(ascii: "}") {
                    throw fail("expected ',' or '}' after label \(label)")
                }
            }
        }
        skipSpaces()
        let valueStart = index
        while index < bytes.count && bytes[index] != 32 && bytes[index] != 9 { index += 1 }
        let valueText = String(decoding: bytes[valueStart..<index], as: UTF8.self)
        guard let value = number(valueText) else { throw fail("'\(valueText)' is not a sample value") }
        skipSpaces()
        var timestamp: Int64? = nil
        if index < bytes.count {
            let rest = String(decoding: bytes[index...], as: UTF8.self).trimmingSpaces
            guard let stamp = Int64(rest) else { throw fail("'\(rest)' is not a timestamp") }
            timestamp = stamp
        }
        return MetricSample(name: name, labels: labels, value: value, timestamp: timestamp)
    }

    static func number(_ text: String) -> Double? {
        switch text {
        case "NaN": return .nan
        case "+Inf", "Inf": return .infinity
        case "-Inf": return -.infinity
        default: return Double(text)
        }
    }
}

extension String {
    fileprivate var trimmingSpaces: String {
        String(drop(while: { $0 == " " || $0 == "\t" }).reversed().drop(while: { $0 == " " || $0 == "\t" }).reversed())
    }
}
