import Foundation
import Hummingbird
import Logging
import NIOCore

/// The ledger's HTTP API (README "Token ledger"): signed usage reports in, balances, summaries
/// and allotments out. The daemon serves this router with its connection limits.
public enum LedgerAPI {
    static let maxBody = 8 << 20

    public static func router(
        store: LedgerStore, settings: LedgerSettings, logger: Logger
    ) -> Router<
        BasicRequestContext
    > {
        let queue = IngestQueue(store: store, rates: settings.rates)
        let router = Router()
        router.get("healthz") { _, _ -> String in "ok\n" }

        @Sendable func isAdmin(_ request: Request) -> Bool {
            guard let adminKey = settings.adminKey, let header = request.headers[.authorization],
                header.hasPrefix("Bearer ")
            else { return false }
            return constantTimeEqual(String(header.dropFirst(7)), adminKey)
        }

        // Edges sign their requests; the admin key works wherever an edge's signature does.
        // Everything that needs no body is checked first, so that an unauthenticated request
        // is refused before its body is read; the MAC is checked once the body is in.
        @Sendable func precheck(_ request: Request) -> Result<Caller, LedgerError> {
            if isAdmin(request) { return .success(.admin) }
            guard let edge = header(request, "X-TDN-Edge") else {
                return .failure(
                    LedgerError(
                        .unauthorized, "sign the request: X-TDN-Edge, X-TDN-Timestamp, X-TDN-Signature (HMAC-SHA256)"))
            }
            guard let key = settings.edges[ExactKey(edge)] else {
                return .failure(LedgerError(.unauthorized, "unknown edge \(quoted(edge))"))
            }
            if let problem = RequestSignature.precheck(
                timestamp: header(request, "X-TDN-Timestamp"), signature: header(request, "X-TDN-Signature"),
                now: Date().timeIntervalSince1970, skew: settings.clockSkew)
            {
                return .failure(LedgerError(.unauthorized, problem))
            }
            return .success(.edge(edge, key: key))
        }

        /// The signature over the whole request target (path and query) and the body, for a
        /// caller that passed `precheck`.
        @Sendable func verify(_ request: Request, _ caller: Caller, body: ByteBuffer) -> LedgerError? {
            guard case .edge(_, let key) = caller else { return nil }
            let signed = RequestSignature.matches(
                key: key, method: request.method.rawValue, target: request.uri.string,
                timestamp: header(request, "X-TDN-Timestamp") ?? "",
                signature: header(request, "X-TDN-Signature") ?? "",
                body: body.readableBytesView)
            return signed ? nil : LedgerError(.unauthorized, "bad signature")
        }

        /// A request without a body (GET): both checks.
        @Sendable func authenticate(_ request: Request) -> LedgerError? {
            switch precheck(request) {
            case .failure(let error): return error
            case .success(let caller): return verify(request, caller, body: ByteBuffer())
            }
        }

        router.post("v1/usage") { request, _ -> Response in
            let caller: Caller
            switch precheck(request) {
            case .failure(let error): return error.response
            case .success(let who): caller = who
            }
            guard case .edge(let edge, _) = caller else {
                return LedgerError(.forbidden, "usage is reported by edges, signed with their own key").response
            }
            let body: ByteBuffer
            do { body = try await request.body.collect(upTo: maxBody) } catch {
                return LedgerError(.contentTooLarge, "a batch is at most \(maxBody >> 20) MB").response
            }
            if let error = verify(request, caller, body: body) { return error.response }
            let batch: UsageBatch
            do { batch = try UsageBatch.decode(strict: Array(body.readableBytesView)) } catch {
                return LedgerError(.badRequest, "not a usage batch: \(error)").response
            }
            guard !batch.records.isEmpty, batch.records.count <= UsageBatch.maxRecords else {
                return LedgerError(.badRequest, "a batch has 1 to 10,000 records").response
            }
            let problems = settings.problems(batch, edge: edge)
            guard problems.isEmpty else {
                return LedgerError(.badRequest, "the batch was refused: nothing was stored", records: problems).response
            }
            do {
                switch try await queue.submit(LedgerStore.Pending(edge: edge, records: batch.records)) {
                case .stored(let stored, let duplicates):
                    return try encoded(.ok, ["stored": stored, "duplicates": duplicates])
                case .conflict(let problems):
                    return LedgerError(
                        .conflict, "ids already recorded with different content: nothing was stored", records: problems
                    ).response
                case .refused(let reason):
                    return LedgerError(.badRequest, "the batch was refused: nothing was stored: \(reason)").response
                }
            } catch {
                logger.error("write failed: \(error)")
                return LedgerError(.serviceUnavailable, "the ledger could not write; nothing was stored, retry")
                    .response
            }
        }

        router.get("v1/balance/:tenant") { request, context -> Response in
            if let error = authenticate(request) { return error.response }
            if let error = strictQuery(request, allowed: []) { return error.response }
            let tenant = context.parameters.get("tenant") ?? ""
            guard !tenant.hasControlCharacters, settings.tenants.contains(ExactKey(tenant)) else {
                return LedgerError(.notFound, "unknown tenant \(quoted(tenant))").response
            }
            return storeResponse { try encoded(.ok, try store.balance(tenant: tenant)) }
        }

        router.get("v1/usage/summary") { request, _ -> Response in
            if let error = authenticate(request) { return error.response }
            if let error = strictQuery(request, allowed: ["tenant", "model", "site", "from", "to", "group-by"]) {
                return error.response
            }
            let parameters = request.uri.queryParameters
            var query = LedgerStore.SummaryQuery()
            query.tenant = parameters["tenant"].map(String.init)
            query.model = parameters["model"].map(String.init)
            query.site = parameters["site"].map(String.init)
            do {
                query.from = try parameters["from"].map { try parseTime(String($0), name: "from") }
                query.to = try parameters["to"].map { try parseTime(String($0), name: "to") }
                if let groups = parameters["group-by"] { query.groupBy = try parseGroupBy(String(groups)) }
            } catch let error as LedgerError {
                return error.response
            }
            return storeResponse { try encoded(.ok, ["rows": try store.summary(query)]) }
        }

        router.post("v1/allotments") { request, _ -> Response in
            guard isAdmin(request) else {
                return LedgerError(.unauthorized, "allotments need the admin key (Authorization: Bearer KEY)").response
            }
            let body: ByteBuffer
            do { body = try await request.body.collect(upTo: 1 << 16) } catch {
                return LedgerError(.contentTooLarge, "an allotment is at most 64 KB").response
            }
            let allotment: Allotment
            do { allotment = try Allotment.decode(strict: Array(body.readableBytesView)) } catch {
                return LedgerError(
                    .badRequest,
                    "not an allotment (expected {\"tenant\": …, \"tokens\": N, \"credits\": X, \"note\": …}): \(error)"
                ).response
            }
            if allotment.tenant.hasControlCharacters || (allotment.note?.hasControlCharacters ?? false) {
                return LedgerError(.badRequest, "tenant and note must not hold control characters").response
            }
            if let note = allotment.note, note.utf8.count > 1024 {
                return LedgerError(.badRequest, "note: at most 1,024 bytes").response
            }
            guard settings.tenants.contains(ExactKey(allotment.tenant)) else {
                return LedgerError(.badRequest, "unknown tenant \(quoted(allotment.tenant))").response
            }
            guard allotment.tokens != nil || allotment.credits != nil else {
                return LedgerError(.badRequest, "allot tokens, credits or both").response
            }
            return storeResponse {
                try store.allot(
                    tenant: allotment.tenant, tokens: allotment.tokens ?? 0, credits: allotment.credits ?? 0,
                    note: allotment.note)
                return try encoded(.ok, try store.balance(tenant: allotment.tenant))
            }
        }

        /// A store call's response: amounts out of range are the client's 400; anything else
        /// is logged and answered 503 (the process lives on).
        @Sendable func storeResponse(_ body: () throws -> Response) -> Response {
            do { return try body() } catch let error as LedgerStoreError {
                if case .outOfRange(let message) = error { return LedgerError(.badRequest, message).response }
                logger.error("ledger store: \(error)")
                return LedgerError(.serviceUnavailable, "the ledger could not read its store").response
            } catch {
                logger.error("ledger store: \(error)")
                return LedgerError(.serviceUnavailable, "the ledger could not read its store").response
            }
        }

        return router
    }

    /// A request header by name (`X-TDN-Edge`, …).
    static func header(_ request: Request, _ name: String) -> String? {
        guard let field = HTTPFields.Element.Name(name) else { return nil }
        return request.headers[field]
    }

    /// Query parameters are as strict as JSON bodies: each known, at most once, without
    /// control characters and at most 256 bytes. Nil when acceptable.
    static func strictQuery(_ request: Request, allowed: Set<String>) -> LedgerError? {
        var seen: Set<String> = []
        for (key, value) in request.uri.queryParameters {
            let name = String(key)
            guard allowed.contains(name) else {
                let known = allowed.isEmpty ? "none" : allowed.sorted().joined(separator: ", ")
                return LedgerError(.badRequest, "unknown query parameter \(quoted(name)) (known: \(known))")
            }
            guard seen.insert(name).inserted else {
                return LedgerError(.badRequest, "query parameter \(name) given twice")
            }
            let text = String(value)
            if text.hasControlCharacters || text.utf8.count > 256 {
                return LedgerError(.badRequest, "query parameter \(name): at most 256 bytes, no control characters")
            }
        }
        return nil
    }

    static func encoded<T: Encodable>(_ status: HTTPResponse.Status, _ value: T) throws -> Response {
        let encoder = JSONEncoder()
        encoder.keyEncodingStrategy = .convertToSnakeCase
        encoder.outputFormatting = [.sortedKeys]
        var response = Response(
            status: status, body: ResponseBody(byteBuffer: ByteBuffer(data: try encoder.encode(value))))
        response.headers[.contentType] = "application/json"
        return response
    }

    /// Unix seconds, a date (2026-11-22) or an RFC 3339 time, within 1970–9999 (anything
    /// else, NaN and infinities included, is refused: no conversion can trap).
    public static func parseTime(_ text: String, name: String) throws(LedgerError) -> Int64 {
        let problem = LedgerError(
            .badRequest,
            "\(name) \(quoted(text)): expected Unix seconds (0 to 253402300799), a date (2026-11-22) or an RFC 3339 time"
        )
        var seconds: Double?
        if text.utf8.allSatisfy({ ($0 >= 48 && $0 <= 57) || $0 == 46 }), let value = Double(text) {
            seconds = value
        } else {
            let formatter = ISO8601DateFormatter()
            if let date = formatter.date(from: text) {
                seconds = date.timeIntervalSince1970
            } else {
                formatter.formatOptions = [.withFullDate]
                seconds = formatter.date(from: text)?.timeIntervalSince1970
            }
        }
        guard let seconds, seconds.isFinite, Amounts.time.contains(seconds) else { throw problem }
        return Int64(seconds.rounded(.down))
    }

    public static func parseGroupBy(_ text: String) throws(LedgerError) -> [String] {
        let groups = text.split(separator: ",").map(String.init)
        for group in groups where !LedgerStore.groupings.contains(group) {
            throw LedgerError(.badRequest, "group-by: \(quoted(group)) is not one of tenant, model, site, hour, day")
        }
        if groups.contains("hour") && groups.contains("day") {
            throw LedgerError(.badRequest, "group-by: hour or day, not both")
        }
        return groups
    }
}

/// Who sent a request that passed the header checks.
enum Caller {
    case admin
    /// An edge and its key (the MAC over the body is checked once the body is read).
    case edge(String, key: String)
}

/// `POST /v1/allotments`: `{"tenant": …, "tokens": N, "credits": X, "note": …}`.
struct Allotment {
    var tenant: String
    var tokens: Int64?
    var credits: Double?
    var note: String?

    static func decode(strict bytes: [UInt8]) throws(JSONError) -> Allotment {
        try StrictJSON.parse(bytes) { (reader: inout StrictJSON) throws(JSONError) -> Allotment in
            // The optional fields go straight into the result; the tenant must be there.
            var allotment = Allotment(tenant: "")
            var hasTenant = false
            try reader.object { (reader: inout StrictJSON, key: String) throws(JSONError) in
                switch key {
                case "tenant": (allotment.tenant, hasTenant) = (try reader.string(), true)
                case "tokens": allotment.tokens = reader.null() ? nil : try reader.int64()
                case "credits": allotment.credits = reader.null() ? nil : try reader.double()
                case "note": allotment.note = reader.null() ? nil : try reader.string()
                default: throw reader.unknownKey(key, known: "tenant, tokens, credits, note")
                }
            }
            guard hasTenant else { throw reader.error("missing field tenant") }
            return allotment
        }
    }
}

/// An error answered as JSON: `{"error": …, "records": [{"index", "id", "reason"}]}`.
public struct LedgerError: Error {
    public var status: HTTPResponse.Status
    public var message: String
    public var records: [RecordProblem] = []

    public init(_ status: HTTPResponse.Status, _ message: String, records: [RecordProblem] = []) {
        self.status = status
        self.message = message
        self.records = records
    }

    struct Body: Encodable {
        var error: String
        var records: [RecordProblem]?
    }

    public var response: Response {
        (try? LedgerAPI.encoded(status, Body(error: message, records: records.isEmpty ? nil : records)))
            ?? Response(status: status)
    }
}
