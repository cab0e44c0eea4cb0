/// A strict JSON reader (RFC 8259) for request bodies that are signed and audited.
///
/// Foundation's decoders take the first (or last) of duplicate keys and silently skip unknown
/// ones, so a signed body could read one way to the ledger and another to an auditor's tool.
/// This reader refuses what RFC 8259 leaves open: a duplicate key in any object is an error,
/// every object is read through a closure that must accept each key (unknown keys are errors),
/// integers are read exactly into `Int64` (no detour through `Double`), and strings must be
/// valid UTF-8 with escapes that form valid scalars. It pulls values from the bytes directly
/// (no intermediate tree), which is also cheaper than a generic decoder.
package struct StrictJSON {
    private let bytes: [UInt8]
    private var index = 0
    /// Where the reader is, for errors: `records[3].prompt_tokens`.
    private var path: [PathElement] = []
    /// Nesting bound: deeper input is refused, never recursed into without limit.
    static let maxDepth = 32

    enum PathElement {
        case key(String)
        case index(Int)
    }

    public init(_ bytes: [UInt8]) { self.bytes = bytes }

    /// Reads one whole document with `body`, then requires the end of the input.
    public static func parse<T>(
        _ bytes: [UInt8], _ body: (inout StrictJSON) throws(JSONError) -> T
    ) throws(JSONError) -> T {
        var reader = StrictJSON(bytes)
        reader.skipWhitespace()
        let value = try body(&reader)
        reader.skipWhitespace()
        guard reader.index == reader.bytes.count else { throw reader.error("unexpected data after the JSON value") }
        return value
    }

    // MARK: - Errors

    /// Where in the document, as `records[3].id`; `$` for the top level.
    public var location: String {
        var text = ""
        for element in path {
            switch element {
            case .key(let key): text += text.isEmpty ? key : "." + key
            case .index(let index): text += "[\(index)]"
            }
        }
        return text.isEmpty ? "$" : text
    }

    public func error(_ message: String) -> JSONError { JSONError(location: location, offset: index, message: message) }

    // MARK: - Structure

    /// Reads an object, calling `field` once per key (in document order) with the reader placed
    /// on its value; `field` must read the value or throw (`unknownKey` for keys it does not
    /// know). A key that appears twice is an error before `field` sees it again.
    public mutating func object(_ field: (inout StrictJSON, String) throws(JSONError) -> Void) throws(JSONError) {
        guard path.count < Self.maxDepth else { throw error("nested deeper than \(Self.maxDepth) levels") }
        try expect(UInt8(ascii: "{"), "expected an object")
        skipWhitespace()
        if peek == UInt8(ascii: "}") {
            index += 1
            return
        }
        // Objects here have a handful of keys: a linear scan beats hashing, up to a point; past
        // it a set, so that an object of many keys costs linear time, not quadratic.
        var seen: [String] = []
        var seenSet: Set<ExactKey> = []
        while true {
            skipWhitespace()
            guard peek == UInt8(ascii: "\"") else { throw error("expected a key in quotes") }
            let key = try rawString()
            if seen.count < 16 {
                if seen.contains(where: { $0.utf8.elementsEqual(key.utf8) }) {
                    throw error("duplicate key \(quoted(key))")
                }
                seen.append(key)
                if seen.count == 16 { seenSet = Set(seen.map(ExactKey.init)) }
            } else if !seenSet.insert(ExactKey(key)).inserted {
                throw error("duplicate key \(quoted(key))")
            }
            skipWhitespace()
            try expect(UInt8(ascii: ":"), "expected ':' after a key")
            skipWhitespace()
            path.append(.key(key))
            try field(&self, key)
            path.removeLast()
            skipWhitespace()
            if peek == UInt8(ascii: ",") {
                index += 1
                continue
            }
            try expect(UInt8(ascii: "}"), "expected ',' or '}' in an object")
            return
        }
    }

    /// Reads an array, calling `element` with the reader on each element and its index.
    public mutating func array(_ element: (inout StrictJSON, Int) throws(JSONError) -> Void) throws(JSONError) {
        guard path.count < Self.maxDepth else { throw error("nested deeper than \(Self.maxDepth) levels") }
        try expect(UInt8(ascii: "["), "expected an array")
        skipWhitespace()
        if peek == UInt8(ascii: "]") {
            index += 1
            return
        }
        var count = 0
        while true {
            skipWhitespace()
            path.append(.index(count))
            try element(&self, count)
            path.removeLast()
            count += 1
            skipWhitespace()
            if peek == UInt8(ascii: ",") {
                index += 1
                continue
            }
            try expect(UInt8(ascii: "]"), "expected ',' or ']' in an array")
            return
        }
    }

    /// The error for a key the caller does not know.
    public func unknownKey(_ key: String, known: String) -> JSONError {
        JSONError(location: location, offset: index, message: "unknown field (known: \(known))")
    }

    // MARK: - Scalars

    /// Whether the next value is `null` (consumed if so).
    public mutating func null() -> Bool {
        guard matches("null") else { return false }
        index += 4
        return true
    }

    public mutating func string() throws(JSONError) -> String {
        guard peek == UInt8(ascii: "\"") else { throw error("expected a string") }
        return try rawString()
    }

    public mutating func bool() throws(JSONError) -> Bool {
        if matches("true") {
            index += 4
            return true
        }
        if matches("false") {
            index += 5
            return false
        }
        throw error("expected true or false")
    }

    /// An integer, exactly: no fraction, no exponent, and within `Int64`.
    public mutating func int64() throws(JSONError) -> Int64 {
        let (start, end, isInteger) = try numberToken()
        guard isInteger else { throw error("expected an integer, not \(text(start, end))") }
        var value: Int64 = 0
        var position = start
        let negative = bytes[position] == UInt8(ascii: "-")
        if negative { position += 1 }
        while position < end {
            let digit = Int64(bytes[position] &- UInt8(ascii: "0"))
            let (shifted, overflow1) = value.multipliedReportingOverflow(by: 10)
            let (next, overflow2) =
                negative ? shifted.subtractingReportingOverflow(digit) : shifted.addingReportingOverflow(digit)
            if overflow1 || overflow2 { throw error("integer \(text(start, end)) is out of range") }
            value = next
            position += 1
        }
        return value
    }

    /// A number, as the nearest `Double`; never NaN or infinite (JSON has neither; a literal
    /// too large for a Double is refused rather than read as infinity).
    public mutating func double() throws(JSONError) -> Double {
        let (start, end, _) = try numberToken()
        let literal = text(start, end)
        guard let value = Double(literal), value.isFinite else { throw error("number \(literal) is out of range") }
        return value
    }

    /// Skips any one value (used only to name a bad field precisely; unknown fields are errors).
    public mutating func skipValue() throws(JSONError) {
        skipWhitespace()
        switch peek {
        case UInt8(ascii: "{"):
            try object { (reader: inout StrictJSON, _: String) throws(JSONError) in try reader.skipValue() }
        case UInt8(ascii: "["):
            try array { (reader: inout StrictJSON, _: Int) throws(JSONError) in try reader.skipValue() }
        case UInt8(ascii: "\""): _ = try rawString()
        case UInt8(ascii: "t"), UInt8(ascii: "f"): _ = try bool()
        case UInt8(ascii: "n"): if !null() { throw error("expected a value") }
        default: _ = try numberToken()
        }
    }

    // MARK: - Lexing

    private var peek: UInt8? { index < bytes.count ? bytes[index] : nil }

    private mutating func skipWhitespace() {
        while index < bytes.count {
            switch bytes[index] {
            case 0x20, 0x09, 0x0A, 0x0D: index += 1
            default: return
            }
        }
    }

    private mutating func expect(_ byte: UInt8, _ message: String) throws(JSONError) {
        guard peek == byte else { throw error(peek == nil ? "unexpected end of input" : message) }
        index += 1
    }

    private func matches(_ literal: StaticString) -> Bool {
        let count = literal.utf8CodeUnitCount
        guard index + count <= bytes.count else { return false }
        return literal.withUTF8Buffer { expected in
            for offset in 0..<count where bytes[index + offset] != expected[offset] { return false }
            return true
        }
    }

    private func text(_ start: Int, _ end: Int) -> String {
        quoted(
            String(decoding: bytes[start..<min(end, start + 40)], as: UTF8.self) + (end - start > 40 ? "…" : ""),
            marks: false)
    }

    /// The extent of a number token per RFC 8259 §6, and whether it is an integer.
    private mutating func numberToken() throws(JSONError) -> (Int, Int, Bool) {
        let start = index
        func digits() -> Int {
            let first = index
            while index < bytes.count, bytes[index] >= UInt8(ascii: "0"), bytes[index] <= UInt8(ascii: "9") {
                index += 1
            }
            return index - first
        }
        if peek == UInt8(ascii: "-") { index += 1 }
        guard let first = peek, first >= UInt8(ascii: "0"), first <= UInt8(ascii: "9") else {
            index = start
            throw error(peek == nil ? "unexpected end of input" : "expected a value")
        }
        if first == UInt8(ascii: "0") {
            index += 1
            if let next = peek, next >= UInt8(ascii: "0"), next <= UInt8(ascii: "9") {
                throw error("a number has no leading zeros")
            }
        } else {
            _ = digits()
        }
        var isInteger = true
        if peek == UInt8(ascii: ".") {
            index += 1
            isInteger = false
            guard digits() > 0 else { throw error("expected digits after '.'") }
        }
        if peek == UInt8(ascii: "e") || peek == UInt8(ascii: "E") {
            index += 1
            isInteger = false
            if peek == UInt8(ascii: "+") || peek == UInt8(ascii: "-") { index += 1 }
            guard digits() > 0 else { throw error("expected digits in the exponent") }
        }
        guard index - start <= 400 else { throw error("number literal too long") }
        return (start, index, isInteger)
    }

    /// A quoted string with its escapes resolved; raw control characters, invalid UTF-8 and
    /// unpaired surrogates are errors.
    private mutating func rawString() throws(JSONError) -> String {
        index += 1  // the opening quote
        let start = index
        // Fast path: no escapes and plain bytes; validated as UTF-8 once.
        while index < bytes.count {
            let byte = bytes[index]
            if byte == UInt8(ascii: "\"") {
                let slice = bytes[start..<index]
                index += 1
                guard let text = String(validating: slice, as: UTF8.self) else {
                    throw error("string is not valid UTF-8")
                }
                return text
            }
            if byte == UInt8(ascii: "\\") { break }
            if byte < 0x20 { throw error("raw control character in a string (escape it, e.g. \\n)") }
            index += 1
        }
        var scalars = Array(bytes[start..<index])
        while index < bytes.count {
            let byte = bytes[index]
            switch byte {
            case UInt8(ascii: "\""):
                index += 1
                guard let text = String(validating: scalars, as: UTF8.self) else {
                    throw error("string is not valid UTF-8")
                }
                return text
            case UInt8(ascii: "\\"):
                index += 1
                guard let escape = peek else { break }
                index += 1
                switch escape {
                case UInt8(ascii: "\""), UInt8(ascii: "\\"), UInt8(ascii: "/"): scalars.append(escape)
                case UInt8(ascii: "b"): scalars.append(0x08)
                case UInt8(ascii: "f"): scalars.append(0x0C)
                case UInt8(ascii: "n"): scalars.append(0x0A)
                case UInt8(ascii: "r"): scalars.append(0x0D)
                case UInt8(ascii: "t"): scalars.append(0x09)
                case UInt8(ascii: "u"):
                    var code = try hex4()
                    if (0xD800...0xDBFF).contains(code) {
                        guard matches("\\u") else { throw error("unpaired surrogate \\u\(String(code, radix: 16))") }
                        index += 2
                        let low = try hex4()
                        guard (0xDC00...0xDFFF).contains(low) else {
                            throw error("unpaired surrogate \\u\(String(code, radix: 16))")
                        }
                        code = 0x10000 + ((code - 0xD800) << 10) + (low - 0xDC00)
                    } else if (0xDC00...0xDFFF).contains(code) {
                        throw error("unpaired surrogate \\u\(String(code, radix: 16))")
                    }
                    guard let scalar = Unicode.Scalar(code) else { throw error("invalid escape") }
                    scalars.append(contentsOf: String(Character(scalar)).utf8)
                default:
                    throw error("invalid escape \\\(Character(Unicode.Scalar(escape)))")
                }
            default:
                if byte < 0x20 { throw error("raw control character in a string (escape it, e.g. \\n)") }
                scalars.append(byte)
                index += 1
            }
        }
        throw error("unterminated string")
    }

    private mutating func hex4() throws(JSONError) -> UInt32 {
        guard index + 4 <= bytes.count else { throw error("unexpected end of input in \\u escape") }
        var value: UInt32 = 0
        for _ in 0..<4 {
            let byte = bytes[index]
            let digit: UInt32
            switch byte {
            case UInt8(ascii: "0")...UInt8(ascii: "9"): digit = UInt32(byte - UInt8(ascii: "0"))
            case UInt8(ascii: "a")...UInt8(ascii: "f"): digit = UInt32(byte - UInt8(ascii: "a") + 10)
            case UInt8(ascii: "A")...UInt8(ascii: "F"): digit = UInt32(byte - UInt8(ascii: "A") + 10)
            default: throw error("expected four hex digits after \\u")
            }
            value = value << 4 | digit
            index += 1
        }
        return value
    }
}

/// Why a JSON body was refused: where, and what.
package struct JSONError: Error, CustomStringConvertible, Sendable {
    public var location: String
    /// Byte offset in the body.
    public var offset: Int
    public var message: String
    public var description: String { "\(location): \(message) (at byte \(offset))" }
}

/// `'text'` with control characters shown as escapes and at most `limit` characters: errors
/// quote input, and must neither echo megabytes back nor carry raw control bytes into logs.
public func quoted(_ text: String, limit: Int = 64, marks: Bool = true) -> String {
    var out = ""
    var count = 0
    for scalar in text.unicodeScalars {
        if count == limit {
            out += "…"
            break
        }
        if scalar.value < 0x20 || scalar.value == 0x7F || (0x80...0x9F).contains(scalar.value) {
            out += "\\u{\(String(scalar.value, radix: 16))}"
        } else {
            out.unicodeScalars.append(scalar)
        }
        count += 1
    }
    return marks ? "'\(out)'" : out
}
