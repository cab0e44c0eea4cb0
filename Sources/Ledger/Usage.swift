import Crypto
import Foundation

/// One usage report from an edge: the fields of an OpenAI-compatible `usage` object with who,
/// what, where and when. `id` is the idempotency key.
public struct UsageRecord: Codable, Hashable, Sendable {
    public var id: String
    public var site: String
    public var tenant: String
    public var model: String
    public var promptTokens: Int
    public var completionTokens: Int
    /// Request start and end, Unix seconds (fractions allowed).
    public var startedAt: Double
    public var endedAt: Double
    public var requestID: String?

    enum CodingKeys: String, CodingKey {
        case id, site, tenant, model
        case promptTokens = "prompt_tokens"
        case completionTokens = "completion_tokens"
        case startedAt = "started_at"
        case endedAt = "ended_at"
        case requestID = "request_id"
    }

    public init(
        id: String, site: String, tenant: String, model: String, promptTokens: Int, completionTokens: Int,
        startedAt: Double, endedAt: Double, requestID: String? = nil
    ) {
        self.id = id
        self.site = site
        self.tenant = tenant
        self.model = model
        self.promptTokens = promptTokens
        self.completionTokens = completionTokens
        self.startedAt = startedAt
        self.endedAt = endedAt
        self.requestID = requestID
    }

    /// One line that fixes every field: what the content hash and the chain cover.
    public var canonical: String {
        func escaped(_ text: String) -> String {
            guard text.utf8.contains(where: { $0 == 92 || $0 == 9 }) else { return text }
            return text.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "\t", with: "\\t")
        }
        return
            "\(escaped(id))\t\(escaped(site))\t\(escaped(tenant))\t\(escaped(model))\t\(promptTokens)\t\(completionTokens)\t"
            + "\(Self.format(startedAt))\t\(Self.format(endedAt))\t\(escaped(requestID ?? ""))"
    }

    /// Times to the microsecond, so that the same report always hashes the same. Times are
    /// checked before a record is stored; an unchecked one never traps here.
    static func format(_ time: Double) -> String { Amounts.integer(time * 1e6).map { String($0) } ?? "invalid" }

    public var contentHash: String { hex(SHA256.hash(data: Data(canonical.utf8))) }

    /// Equality by bytes: ids are keys, and two canonically equal Unicode spellings are two
    /// different ids to SQLite, so they must be two different ids here too.
    public static func == (a: UsageRecord, b: UsageRecord) -> Bool {
        ExactKey(a.id) == ExactKey(b.id) && ExactKey(a.site) == ExactKey(b.site)
            && ExactKey(a.tenant) == ExactKey(b.tenant)
            && ExactKey(a.model) == ExactKey(b.model) && a.promptTokens == b.promptTokens
            && a.completionTokens == b.completionTokens && a.startedAt == b.startedAt && a.endedAt == b.endedAt
            && a.requestID.map(ExactKey.init) == b.requestID.map(ExactKey.init)
    }

    public func hash(into hasher: inout Hasher) {
        hasher.combine(ExactKey(id))
        hasher.combine(promptTokens)
        hasher.combine(completionTokens)
    }

    /// Reads one record from a strict JSON reader: every field known, none twice.
    static func read(_ reader: inout StrictJSON) throws(JSONError) -> UsageRecord {
        var id: String?
        var site: String?
        var tenant: String?
        var model: String?
        var requestID: String?
        var prompt: Int64?
        var completion: Int64?
        var started: Double?
        var ended: Double?
        try reader.object { (reader: inout StrictJSON, key: String) throws(JSONError) in
            switch key {
            case "id": id = try reader.string()
            case "site": site = try reader.string()
            case "tenant": tenant = try reader.string()
            case "model": model = try reader.string()
            case "prompt_tokens": prompt = try reader.int64()
            case "completion_tokens": completion = try reader.int64()
            case "started_at": started = try reader.double()
            case "ended_at": ended = try reader.double()
            case "request_id": requestID = reader.null() ? nil : try reader.string()
            default: throw reader.unknownKey(key, known: Self.fieldNames)
            }
        }
        func missing(_ name: String) -> JSONError { reader.error("missing field \(name)") }
        guard let id else { throw missing("id") }
        guard let site else { throw missing("site") }
        guard let tenant else { throw missing("tenant") }
        guard let model else { throw missing("model") }
        guard let prompt else { throw missing("prompt_tokens") }
        guard let completion else { throw missing("completion_tokens") }
        guard let started else { throw missing("started_at") }
        guard let ended else { throw missing("ended_at") }
        // Token counts are checked against their bounds by `problems`; here only that they fit.
        guard let promptTokens = Int(exactly: prompt), let completionTokens = Int(exactly: completion) else {
            throw reader.error("token count out of range")
        }
        return UsageRecord(
            id: id, site: site, tenant: tenant, model: model, promptTokens: promptTokens,
            completionTokens: completionTokens,
            startedAt: started, endedAt: ended, requestID: requestID)
    }

    static let fieldNames =
        "id, site, tenant, model, prompt_tokens, completion_tokens, started_at, ended_at, request_id"
}

/// A batch as posted to `POST /v1/usage`.
public struct UsageBatch: Codable, Sendable {
    public var records: [UsageRecord]
    public init(records: [UsageRecord]) { self.records = records }

    /// Decodes a request body strictly: `{"records": [...]}` and nothing else; a duplicate or
    /// unknown key anywhere, a malformed value or trailing data is an error naming where.
    package static func decode(strict bytes: [UInt8]) throws(JSONError) -> UsageBatch {
        try StrictJSON.parse(bytes) { (reader: inout StrictJSON) throws(JSONError) -> UsageBatch in
            var records: [UsageRecord]?
            try reader.object { (reader: inout StrictJSON, key: String) throws(JSONError) in
                guard key == "records" else { throw reader.unknownKey(key, known: "records") }
                var list: [UsageRecord] = []
                try reader.array { (reader: inout StrictJSON, index: Int) throws(JSONError) in
                    guard index < UsageBatch.maxRecords else {
                        throw reader.error("a batch has at most \(UsageBatch.maxRecords) records")
                    }
                    list.append(try UsageRecord.read(&reader))
                }
                records = list
            }
            guard let records else { throw reader.error("missing field records") }
            return UsageBatch(records: records)
        }
    }

    public static let maxRecords = 10_000
}

/// A string compared and hashed by its UTF-8 bytes (Swift's `String ==` is Unicode canonical
/// equivalence, SQLite's TEXT comparison is bytewise: keys must agree with the database).
public struct ExactKey: Hashable, Sendable {
    public let text: String
    public init(_ text: String) { self.text = text }
    public static func == (a: ExactKey, b: ExactKey) -> Bool { a.text.utf8.elementsEqual(b.text.utf8) }
    public func hash(into hasher: inout Hasher) {
        var text = text
        text.withUTF8 { hasher.combine(bytes: UnsafeRawBufferPointer($0)) }
    }
}

extension String {
    /// Whether the string holds a control character (C0, DEL or C1): refused in every stored
    /// field, since SQLite's C API truncates at NUL and logs and CSV break on the others.
    public var hasControlCharacters: Bool {
        unicodeScalars.contains { $0.value < 0x20 || $0.value == 0x7F || (0x80...0x9F).contains($0.value) }
    }
}

/// The documented bounds of amounts: every input is checked against them and every stored
/// total stays within `totalLimit`, so that a sum or difference of two totals always fits in
/// an `Int64` (no trap, no silent float conversion by SQLite).
public enum Amounts {
    /// Tokens of one record, prompt or completion.
    public static let recordTokens: ClosedRange<Int64> = 0...100_000_000
    /// Tokens of one allotment (negative: a correction).
    public static let allotmentTokens: ClosedRange<Int64> = -1_000_000_000_000_000...1_000_000_000_000_000
    /// Credits of one allotment (stored as micro-credits).
    public static let allotmentCredits: ClosedRange<Double> = -1_000_000_000...1_000_000_000
    /// A rate: credits per 1,000 tokens.
    public static let rate: ClosedRange<Double> = 0...1_000_000
    /// Any stored total (tokens or micro-credits) stays within ± this.
    public static let totalLimit: Int64 = 4_000_000_000_000_000_000
    /// Unix seconds accepted in queries: 1970 to the end of 9999.
    public static let time: ClosedRange<Double> = 0...253_402_300_799

    /// `a + b` when it fits within `totalLimit`, else nil.
    public static func add(_ a: Int64, _ b: Int64) -> Int64? {
        let (sum, overflow) = a.addingReportingOverflow(b)
        return overflow || abs(sum) > totalLimit ? nil : sum
    }

    /// A finite `Double` rounded to the nearest integer, when it fits in an `Int64`.
    public static func integer(_ value: Double) -> Int64? {
        guard value.isFinite, value > -9.2e18, value < 9.2e18 else { return nil }
        return Int64(value.rounded())
    }
}

/// Credits per 1,000 prompt and completion tokens of one model.
public struct Rate: Hashable, Sendable, Codable {
    public var prompt: Double
    public var completion: Double
    public init(prompt: Double, completion: Double) { (self.prompt, self.completion) = (prompt, completion) }

    /// Micro-credits (integers: sums never drift) for a record's tokens. With tokens and rates
    /// within `Amounts`, each part is at most 10^17; out-of-range input gives nil, not a trap.
    public func microCredits(prompt tokens: Int, completion completionTokens: Int) -> Int64? {
        guard let a = Amounts.integer(Double(tokens) * prompt * 1000),
            let b = Amounts.integer(Double(completionTokens) * completion * 1000)
        else { return nil }
        return Amounts.add(a, b)
    }
}

/// The ledger's settings (the `ledger:` section of tdnd.yaml). Names are keyed by their bytes
/// (`ExactKey`), as SQLite compares them: a canonically equal spelling is another name.
public struct LedgerSettings: Sendable {
    /// Edge (site) id → its HMAC key.
    public var edges: [ExactKey: String] = [:]
    /// The bearer key of the admin API (allotments).
    public var adminKey: String?
    public var tenants: Set<ExactKey> = []
    /// Model → rate.
    public var rates: [ExactKey: Rate] = [:]
    /// Seconds a signed request's timestamp may be off.
    public var clockSkew: Double = 300
    public init() {}
}

/// Why one record of a batch is refused.
public struct RecordProblem: Codable, Hashable, Sendable {
    public var index: Int
    public var id: String?
    public var reason: String
}

extension LedgerSettings {
    /// Every problem of a batch from edge `edge`, one per record at most (empty: acceptable).
    public func problems(_ batch: UsageBatch, edge: String) -> [RecordProblem] {
        var problems: [RecordProblem] = []
        var seen: [ExactKey: Int] = [:]
        for (index, record) in batch.records.enumerated() {
            func fail(_ reason: String) {
                // The id is echoed only when it is valid (1–128 bytes, no control characters).
                let echo =
                    record.id.isEmpty || record.id.utf8.count > 128 || record.id.hasControlCharacters ? nil : record.id
                problems.append(RecordProblem(index: index, id: echo, reason: reason))
            }
            if record.id.isEmpty || record.id.utf8.count > 128 {
                fail("id must be 1 to 128 bytes")
                continue
            }
            let strings = [
                ("id", record.id), ("site", record.site), ("tenant", record.tenant), ("model", record.model),
                ("request_id", record.requestID ?? ""),
            ]
            if let (name, _) = strings.first(where: { $0.1.hasControlCharacters }) {
                fail("\(name) holds a control character")
                continue
            }
            if !record.site.utf8.elementsEqual(edge.utf8) {
                fail("site \(quoted(record.site)) is not the signing edge \(quoted(edge))")
                continue
            }
            if !tenants.contains(ExactKey(record.tenant)) {
                fail("unknown tenant \(quoted(record.tenant))")
                continue
            }
            if rates[ExactKey(record.model)] == nil {
                fail("unknown model \(quoted(record.model)) (no rate)")
                continue
            }
            if !Amounts.recordTokens.contains(Int64(record.promptTokens))
                || !Amounts.recordTokens.contains(Int64(record.completionTokens))
            {
                fail("token counts must be 0 to 100,000,000")
                continue
            }
            if !(record.startedAt > 946_684_800 && record.startedAt < 4_102_444_800)
                || !(record.endedAt >= record.startedAt)
                || record.endedAt - record.startedAt > 86_400
            {
                fail("started_at and ended_at must be Unix seconds with started_at ≤ ended_at (within a day)")
                continue
            }
            if let requestID = record.requestID, requestID.utf8.count > 256 {
                fail("request_id longer than 256 bytes")
                continue
            }
            if let earlier = seen[ExactKey(record.id)] {
                if batch.records[earlier] != record {
                    fail("id \(quoted(record.id)) appears twice with different content")
                }
                continue
            }
            seen[ExactKey(record.id)] = index
        }
        return problems
    }
}

/// Compares secrets without an early exit.
public func constantTimeEqual(_ a: String, _ b: String) -> Bool {
    let x = Array(a.utf8)
    let y = Array(b.utf8)
    var difference = UInt8(x.count == y.count ? 0 : 1)
    for index in 0..<max(x.count, y.count) {
        difference |= (index < x.count ? x[index] : 0) ^ (index < y.count ? y[index] : 0)
    }
    return difference == 0
}

/// HMAC-SHA256 request signatures over `METHOD\nTARGET\nTIMESTAMP\n` and the body, where
/// TARGET is the request target exactly as sent: the path and, when there is one, `?` and the
/// query string. A captured signature therefore cannot be replayed with other parameters.
public enum RequestSignature {
    public static func sign(
        key: String, method: String, target: String, timestamp: String, body: some DataProtocol
    ) -> String {
        hex(mac(key: key, method: method, target: target, timestamp: timestamp, body: body))
    }

    static func mac(key: String, method: String, target: String, timestamp: String, body: some DataProtocol) -> Data {
        var hmac = HMAC<SHA256>(key: SymmetricKey(data: Data(key.utf8)))
        hmac.update(data: Data("\(method)\n\(target)\n\(timestamp)\n".utf8))
        hmac.update(data: body)
        return Data(hmac.finalize())
    }

    /// The checks that need no body, made before a body is read: nil when the headers may
    /// carry a valid signature, else why not.
    public static func precheck(timestamp: String?, signature: String?, now: Double, skew: Double) -> String? {
        guard let timestamp, !timestamp.isEmpty, timestamp.utf8.count <= 12,
            timestamp.utf8.allSatisfy({ $0 >= 48 && $0 <= 57 }),
            let time = Double(timestamp)
        else { return "missing or bad X-TDN-Timestamp (Unix seconds, digits only)" }
        guard abs(now - time) <= skew else {
            return "timestamp \(timestamp) is more than \(Int(skew)) s from the ledger's clock"
        }
        guard let signature else { return "missing X-TDN-Signature" }
        guard signature.utf8.count == 64, unhex(signature) != nil else {
            return "X-TDN-Signature must be 64 hex digits (HMAC-SHA256)"
        }
        return nil
    }

    /// Whether `signature` (already through `precheck`) is the MAC of this request.
    public static func matches(
        key: String, method: String, target: String, timestamp: String, signature: String, body: some DataProtocol
    ) -> Bool {
        guard let given = unhex(signature) else { return false }
        return mac(key: key, method: method, target: target, timestamp: timestamp, body: body)
            .elementsEqualConstantTime(given)
    }
}

extension Data {
    func elementsEqualConstantTime(_ other: Data) -> Bool {
        guard count == other.count else { return false }
        var difference: UInt8 = 0
        for (a, b) in zip(self, other) { difference |= a ^ b }
        return difference == 0
    }
}

func hex<D: Sequence>(_ bytes: D) -> String where D.Element == UInt8 {
    let digits = Array("0123456789abcdef".utf8)
    var out = [UInt8]()
    for byte in bytes {
        out.append(digits[Int(byte >> 4)])
        out.append(digits[Int(byte & 15)])
    }
    return String(decoding: out, as: UTF8.self)
}

func hex(_ digest: some Digest) -> String { hex(Array(digest)) }

func unhex(_ text: String) -> Data? {
    let bytes = Array(text.utf8)
    guard bytes.count % 2 == 0 else { return nil }
    var out = Data(capacity: bytes.count / 2)
    func value(_ c: UInt8) -> UInt8? {
        switch c {
        case 48...57: return c - 48
        case 97...102: return c - 87
        case 65...70: return c - 55
        default: return nil
        }
    }
    var index = 0
    while index < bytes.count {
        guard let high = value(bytes[index]), let low = value(bytes[index + 1]) else { return nil }
        out.append(high << 4 | low)
        index += 2
    }
    return out
}
