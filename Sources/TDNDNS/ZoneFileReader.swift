import CLDNS
import ConfigFile

#if canImport(Glibc)
import Glibc
#endif

/// A record read from a zone file, with where it came from.
public struct ZoneRecord: Sendable {
    package var record: ResourceRecord
    public var file: String
    public var line: Int
}

/// Reads RFC 1035 §5 master files. Entries are split here (comments, quotes, parentheses,
/// `$ORIGIN`, `$TTL`, `$INCLUDE`, line numbers); each record's text is handed to libldns, which
/// knows every RDATA syntax, and its wire form is taken back.
public struct ZoneFileReader {
    public private(set) var records: [ZoneRecord] = []
    public private(set) var errors: [ConfigError] = []
    /// The paths read, the zone file first.
    public private(set) var files: [String] = []
    private let includeDepthLimit = 8

    /// Reads `path` with `origin` as the initial `$ORIGIN`; `displayPath` names it in errors.
    public static func read(path: String, displayPath: String? = nil, origin: DomainName) -> ZoneFileReader {
        var reader = ZoneFileReader()
        reader.readFile(path: path, display: displayPath ?? path, origin: origin, defaultTTL: nil, depth: 0)
        return reader
    }

    private mutating func readFile(path: String, display: String, origin: DomainName, defaultTTL: UInt32?, depth: Int) {
        files.append(path)
        guard let text = readWholeFile(path) else {
            errors.append(ConfigError(file: display, line: 0, message: "cannot read the file"))
            return
        }
        var origin = origin
        var defaultTTL = defaultTTL
        var previousOwner: OpaquePointer? = nil
        defer { if let previousOwner { ldns_rdf_deep_free(UnsafeMutablePointer(previousOwner)) } }

        for entry in Self.entries(of: text, file: display, errors: &errors) {
            let fields = entry.text.split(whereSeparator: { $0 == " " || $0 == "\t" })
            guard let first = fields.first else { continue }
            let fail = { (message: String) in ConfigError(file: display, line: entry.line, message: message) }
            if first.hasPrefix("$") {
                switch first.uppercased() {
                case "$ORIGIN":
                    guard fields.count == 2 else {
                        errors.append(fail("$ORIGIN takes one domain name"))
                        continue
                    }
                    do { origin = try DomainName(String(fields[1]), origin: origin) } catch {
                        errors.append(fail("$ORIGIN: \(error.message)"))
                    }
                case "$TTL":
                    guard fields.count == 2, let ttl = Self.parseTTL(String(fields[1])) else {
                        errors.append(fail("$TTL takes one TTL (seconds, or units such as 1h30m)"))
                        continue
                    }
                    defaultTTL = ttl
                case "$INCLUDE":
                    guard fields.count == 2 || fields.count == 3 else {
                        errors.append(fail("$INCLUDE takes a file name and an optional origin"))
                        continue
                    }
                    guard depth < includeDepthLimit else {
                        errors.append(fail("$INCLUDE nested deeper than \(includeDepthLimit) (a loop?)"))
                        continue
                    }
                    var includeOrigin = origin
                    if fields.count == 3 {
                        do { includeOrigin = try DomainName(String(fields[2]), origin: origin) } catch {
                            errors.append(fail("$INCLUDE origin: \(error.message)"))
                            continue
                        }
                    }
                    let name = String(fields[1])
                    let directory = path.split(separator: "/", omittingEmptySubsequences: false).dropLast().joined(
                        separator: "/")
                    let includePath = name.hasPrefix("/") || directory.isEmpty ? name : directory + "/" + name
                    let displayDirectory = display.split(separator: "/", omittingEmptySubsequences: false).dropLast()
                        .joined(separator: "/")
                    let includeDisplay =
                        name.hasPrefix("/") || displayDirectory.isEmpty ? name : displayDirectory + "/" + name
                    guard readWholeFile(includePath) != nil else {
                        errors.append(fail("$INCLUDE: cannot read \(includeDisplay)"))
                        continue
                    }
                    // RFC 1035 §5.1: the included file's $ORIGIN does not leak back here.
                    readFile(
                        path: includePath, display: includeDisplay, origin: includeOrigin, defaultTTL: defaultTTL,
                        depth: depth + 1)
                default:
                    errors.append(fail("unknown directive \(first)"))
                }
                continue
            }
            switch Self.parseRecord(entry.text, origin: origin, defaultTTL: defaultTTL, previousOwner: &previousOwner) {
            case .success(let record):
                records.append(ZoneRecord(record: record, file: display, line: entry.line))
            case .failure(let message):
                errors.append(fail(message))
            }
        }
    }

    struct Entry {
        var text: String
        var line: Int
    }

    /// Splits master-file text into logical entries: comments removed, parenthesised groups
    /// joined onto one line, quoted strings and escapes kept intact.
    static func entries(of text: [UInt8], file: String, errors: inout [ConfigError]) -> [Entry] {
        var entries: [Entry] = []
        var current: [UInt8] = []
        var line = 1
        var entryLine = 1
        var depth = 0
        var inQuote = false
        var index = 0
        func finish() {
            if current.contains(where: { $0 != 32 && $0 != 9 }) {
                entries.append(Entry(text: String(decoding: current, as: UTF8.self), line: entryLine))
            }
            current.removeAll(keepingCapacity: true)
        }
        while index < text.count {
            let byte = text[index]
            index += 1
            switch byte {
            case UInt8(ascii: "\\"):
                current.append(byte)
                if index < text.count {
                    if text[index] == 10 { line += 1 }
                    current.append(text[index])
                    index += 1
                }
            case UInt8(ascii: "\""):
                inQuote.toggle()
                current.append(byte)
            case UInt8(ascii: ";") where !inQuote:
                while index < text.count && text[index] != 10 { index += 1 }
            case UInt8(ascii: "(") where !inQuote:
                depth += 1
                current.append(32)
            case UInt8(ascii: ")") where !inQuote:
                if depth == 0 {
                    errors.append(ConfigError(file: file, line: line, message: "')' without a matching '('"))
                } else {
                    depth -= 1
                }
                current.append(32)
            case 13:
                break
            case 10:
                if inQuote {
                    errors.append(ConfigError(file: file, line: line, message: "quoted string not closed on its line"))
                    inQuote = false
                    depth = 0
                }
                line += 1
                if depth == 0 {
                    finish()
                    entryLine = line
                } else {
                    current.append(32)
                }
            default:
                current.append(byte)
            }
        }
        if depth > 0 {
            errors.append(
                ConfigError(file: file, line: entryLine, message: "'(' not closed before the end of the file"))
        } else {
            finish()
        }
        return entries
    }

    /// TTLs as seconds or BIND-style units (`1w2d3h4m5s`), at most 2^31-1 (RFC 2181 §8).
    public static func parseTTL(_ text: String) -> UInt32? {
        if let plain = UInt32(text) { return plain <= Int32.max ? plain : nil }
        var total: UInt64 = 0
        var number: UInt64? = nil
        for character in text.lowercased() {
            if let digit = character.wholeNumberValue {
                number = (number ?? 0) * 10 + UInt64(digit)
                if number! > UInt64(Int32.max) { return nil }
                continue
            }
            let unit: UInt64
            switch character {
            case "s": unit = 1
            case "m": unit = 60
            case "h": unit = 3600
            case "d": unit = 86400
            case "w": unit = 604800
            default: return nil
            }
            guard let value = number else { return nil }
            total += value * unit
            number = nil
        }
        if let number { total += number }
        return total <= UInt64(Int32.max) ? UInt32(total) : nil
    }

    enum ParseResult {
        case success(ResourceRecord)
        case failure(String)
    }

    static func parseRecord(
        _ text: String, origin: DomainName, defaultTTL: UInt32?, previousOwner: inout OpaquePointer?
    ) -> ParseResult {
        guard let originRdf = ldns_dname_new_frm_str(origin.description) else {
            return .failure("cannot use origin \(origin)")
        }
        defer { ldns_rdf_deep_free(originRdf) }
        var rr: UnsafeMutablePointer<ldns_rr>? = nil
        var prev = UnsafeMutablePointer<ldns_rdf>(previousOwner)
        // ldns reads a default TTL of 0 as "use 3600": `$TTL 0` goes in as a sentinel instead.
        let status = ldns_rr_new_frm_str(
            &rr, text, defaultTTL == 0 ? zeroTTLSentinel : defaultTTL ?? 3600, originRdf, &prev)
        previousOwner = OpaquePointer(prev)
        guard status == LDNS_STATUS_OK, let rr else {
            let reason = ldns_get_errorstr_by_id(status).map { String(cString: $0) } ?? "cannot parse the record"
            // Quote the record: ldns says what it expected, the operator needs to see where.
            let quoted = text.split(whereSeparator: { $0 == " " || $0 == "\t" }).joined(separator: " ")
            let shown = quoted.count > 80 ? quoted.prefix(77) + "..." : Substring(quoted)
            return .failure(reason.prefix(1).lowercased() + reason.dropFirst() + ": " + shown)
        }
        defer { ldns_rr_free(rr) }
        let recordClass = ldns_rr_get_class(rr)
        guard recordClass == LDNS_RR_CLASS_IN else {
            return .failure("only class IN is served")
        }
        var wire: UnsafeMutablePointer<UInt8>? = nil
        var size = 0
        guard ldns_rr2wire(&wire, rr, Int32(LDNS_SECTION_ANSWER.rawValue), &size) == LDNS_STATUS_OK, let wire else {
            return .failure("cannot encode the record")
        }
        defer { free(wire) }
        let bytes = Array(UnsafeBufferPointer(start: wire, count: size))
        var reader = WireReader(bytes)
        do {
            let owner = try reader.name("owner")
            let type = RecordType(try reader.u16("type"))
            _ = try reader.u16("class")
            var ttl = try reader.u32("ttl")
            let length = Int(try reader.u16("rdlength"))
            let rdata = try reader.take(length, "rdata")
            if defaultTTL == 0 && ttl == zeroTTLSentinel { ttl = 0 }
            guard ttl <= UInt32(Int32.max) else { return .failure("TTL above 2147483647") }
            return .success(ResourceRecord(name: owner, type: type, ttl: ttl, rdata: rdata))
        } catch {
            return .failure("ldns produced a malformed record: \(error)")
        }
    }

}

private let zeroTTLSentinel: UInt32 = 2_147_483_646
