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
        return "\(escaped(id))\t\(escaped(site))\t\(escaped(tenant))\t\(escaped(model))\t\(promptTokens)\t\(completionTokens)\t"
            + "\(Self.format(startedAt))\t\(Self.format(endedAt))\t\(escaped(requestID ?? ""))"
    }

    /// Times to the microsecond, so that the same report always hashes the same.
    static func format(_ time: Double) -> String { String(Int64((time * 1e6).rounded())) }

    public var contentHash: String { hex(SHA256.hash(data: Data(canonical.utf8))) }
}

/// A batch as posted to `POST /v1/usage`.
public struct UsageBatch: Codable, Sendable {
    public var records: [UsageRecord]
    public init(records: [UsageRecord]) { self.records = records }
}

/// Credits per 1,000 prompt and completion tokens of one model.
public struct Rate: Hashable, Sendable, Codable {
    public var prompt: Double
    public var completion: Double
    public init(prompt: Double, completion: Double) {
        self.prompt = prompt
        self.completion = completion
    }

    /// Micro-credits (integers: sums never drift) for a record's tokens.
    public func microCredits(prompt tokens: Int, completion completionTokens: Int) -> Int64 {
        Int64((Double(tokens) * prompt * 1000).rounded()) + Int64((Double(completionTokens) * completion * 1000).rounded())
    }
}

/// The ledger's settings (the `ledger:` section of tdnd.yaml).
public struct LedgerSettings: Sendable {
    /// Edge (site) id → its HMAC key.
    public var edges: [String: String] = [:]
    /// The bearer key of the admin API (allotments).
    public var adminKey: String?
    public var tenants: Set<String> = []
    /// Model → rate.
    public var rates: [String: Rate] = [:]
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
        var seen: [String: Int] = [:]
        for (index, record) in batch.records.enumerated() {
            func fail(_ reason: String) { problems.append(RecordProblem(index: index, id: record.id.isEmpty ? nil : record.id, reason: reason)) }
            if record.id.isEmpty || record.id.utf8.count > 128 { fail("id must be 1 to 128 bytes"); continue }
            if record.site != edge { fail("site '\(record.site)' is not the signing edge '\(edge)'"); continue }
            if !tenants.contains(record.tenant) { fail("unknown tenant '\(record.tenant)'"); continue }
            if rates[record.model] == nil { fail("unknown model '\(record.model)' (no rate)"); continue }
            if record.promptTokens < 0 || record.completionTokens < 0 || record.promptTokens > 100_000_000 || record.completionTokens > 100_000_000 {
                fail("token counts must be 0 to 100,000,000")
                continue
            }
            if !(record.startedAt > 946_684_800 && record.startedAt < 4_102_444_800) || !(record.endedAt >= record.startedAt)
                || record.endedAt - record.startedAt > 86_400
            {
                fail("started_at and ended_at must be Unix seconds with started_at ≤ ended_at (within a day)")
                continue
            }
            if let requestID = record.requestID, requestID.utf8.count > 256 { fail("request_id longer than 256 bytes"); continue }
            if let earlier = seen[record.id] {
                if batch.records[earlier] != record { fail("id '\(record.id)' appears twice with different content") }
                continue
            }
            seen[record.id] = index
        }
        return problems
    }
}

/// HMAC-SHA256 request signatures: over `METHOD\nPATH\nTIMESTAMP\n` and the body.
public enum RequestSignature {
    public static func sign(key: String, method: String, path: String, timestamp: String, body: some DataProtocol) -> String {
        hex(mac(key: key, method: method, path: path, timestamp: timestamp, body: body))
    }

    static func mac(key: String, method: String, path: String, timestamp: String, body: some DataProtocol) -> Data {
        var hmac = HMAC<SHA256>(key: SymmetricKey(data: Data(key.utf8)))
        hmac.update(data: Data("\(method)\n\(path)\n\(timestamp)\n".utf8))
        hmac.update(data: body)
        return Data(hmac.finalize())
    }

    /// Nil when valid, else why not.
    public static func check(
        key: String, method: String, path: String, timestamp: String?, signature: String?, body: some DataProtocol, now: Double, skew: Double
    ) -> String? {
        guard let timestamp, let time = Double(timestamp) else { return "missing or bad X-TDN-Timestamp (Unix seconds)" }
        guard abs(now - time) <= skew else { return "timestamp \(timestamp) is more than \(Int(skew)) s from the ledger's clock" }
        guard let signature else { return "missing X-TDN-Signature" }
        let expected = mac(key: key, method: method, path: path, timestamp: timestamp, body: body)
        guard let given = unhex(signature), expected.elementsEqualConstantTime(given) else { return "bad signature" }
        return nil
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
