import ArgumentParser
import Foundation
import Hummingbird
import LedgerSync
import Logging
import ServiceLifecycle
import TDNDNS

/// `tdnd ledger …`: the token ledger beside the DNS server.
struct LedgerCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "ledger",
        abstract: "The token ledger: usage reports from the edges, stored once, durably, with balances and rollups.",
        subcommands: [LedgerServe.self, LedgerVerify.self, LedgerReport.self, LedgerAllot.self])
}

/// Options every ledger command shares.
struct LedgerOptions: ParsableArguments {
    @Option(help: "The YAML configuration file (its `ledger:` section; default: ./tdnd.yaml, else the bundled demo).")
    var config: String?

    @Option(help: "The ledger's data directory (overrides ledger.data).")
    var data: String?

    func resolve() throws -> DaemonConfig {
        var config = DaemonConfig()
        do {
            if let file = self.config ?? DaemonConfig.defaultFile() { config = try DaemonConfig.load(path: file) }
        } catch {
            report(error)
            throw ExitCode(1)
        }
        if let data { config.ledger.data = data }
        return config
    }
}

struct LedgerServe: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "serve", abstract: "Serve the ledger's HTTP API (default 127.0.0.1:9154).")

    @OptionGroup var options: LedgerOptions

    @Option(help: "HOST:PORT to listen on (overrides ledger.listen).")
    var listen: String?

    @Option(help: "trace, debug, info, notice, warning, error or critical.")
    var logLevel: String = "info"

    func run() async throws {
        var config = try options.resolve()
        if let listen {
            guard let address = ListenAddress(listen) else {
                throw ValidationError("--listen \(listen): expected HOST:PORT")
            }
            config.ledger.listen = address
        }
        var logger = Logger(label: "tdn.ledger") { StreamLogHandler.standardError(label: $0) }
        logger.logLevel = Logger.Level(rawValue: logLevel) ?? .info
        let settings = config.ledger.settings
        if settings.edges.isEmpty { logger.warning("no edge keys (ledger.edges): every usage report will be refused") }
        let store: LedgerStore
        do { store = try LedgerStore(directory: config.ledger.data) } catch {
            logger.critical("ledger: cannot open \(config.ledger.data): \(error)")
            throw ExitCode(1)
        }
        ensureDescriptors(needed: config.http.maxConnections + 64, what: "ledger", logger: logger)
        let app = LedgerAPI.make(
            store: store, settings: settings, address: config.ledger.listen, limits: config.http, logger: logger)
        logger.info("ledger: \(store.path)")
        var services: [ServiceGroupConfiguration.ServiceConfiguration] = [.init(service: app)]
        if let sync = config.ledger.sync {
            logger.info("ledger sync: node \(sync.node) to postgres \(sync.host):\(sync.port)/\(sync.database)")
            services.append(
                .init(service: SyncService(sync: PostgresSync(store: store, settings: sync, logger: logger))))
        }
        let group = ServiceGroup(
            configuration: .init(services: services, gracefulShutdownSignals: [.sigterm, .sigint], logger: logger))
        try await group.run()
    }
}

/// Ships records to the central PostgreSQL until shutdown.
struct SyncService: Service {
    let sync: PostgresSync

    func run() async throws {
        await cancelWhenGracefulShutdown { await sync.run() }
    }
}

/// The ledger's HTTP API.
enum LedgerAPI {
    static let maxBody = 8 << 20

    static func make(
        store: LedgerStore, settings: LedgerSettings, address: ListenAddress, limits: HTTPLimits, logger: Logger
    ) -> some Service {
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

        return httpService(
            router, address: address, serverName: "tdnd-ledger", what: "ledger API", limits: limits, logger: logger)
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
    static func parseTime(_ text: String, name: String) throws(LedgerError) -> Int64 {
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

    static func parseGroupBy(_ text: String) throws(LedgerError) -> [String] {
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
            var tenant: String?
            var tokens: Int64?
            var credits: Double?
            var note: String?
            try reader.object { (reader: inout StrictJSON, key: String) throws(JSONError) in
                switch key {
                case "tenant": tenant = try reader.string()
                case "tokens": tokens = reader.null() ? nil : try reader.int64()
                case "credits": credits = reader.null() ? nil : try reader.double()
                case "note": note = reader.null() ? nil : try reader.string()
                default: throw reader.unknownKey(key, known: "tenant, tokens, credits, note")
                }
            }
            guard let tenant else { throw reader.error("missing field tenant") }
            return Allotment(tenant: tenant, tokens: tokens, credits: credits, note: note)
        }
    }
}

/// An error answered as JSON: `{"error": …, "records": [{"index", "id", "reason"}]}`.
struct LedgerError: Error {
    var status: HTTPResponse.Status
    var message: String
    var records: [RecordProblem] = []

    init(_ status: HTTPResponse.Status, _ message: String, records: [RecordProblem] = []) {
        self.status = status
        self.message = message
        self.records = records
    }

    struct Body: Encodable {
        var error: String
        var records: [RecordProblem]?
    }

    var response: Response {
        (try? LedgerAPI.encoded(status, Body(error: message, records: records.isEmpty ? nil : records)))
            ?? Response(status: status)
    }
}

struct LedgerVerify: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "verify",
        abstract: "Check the hash chain, every record's content, and the rollups; exit 1 on any problem.")

    @OptionGroup var options: LedgerOptions

    func run() async throws {
        let config = try options.resolve()
        let result = try LedgerStore(directory: config.ledger.data).verify()
        for problem in result.problems { FileHandle.standardError.write(Data("\(problem)\n".utf8)) }
        print("\(result.batches) batches, \(result.records) records; head \(result.head)")
        if !result.problems.isEmpty {
            print("FAILED: \(result.problems.count) problem(s)")
            throw ExitCode(1)
        }
        print("ok")
    }
}

struct LedgerReport: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "report", abstract: "Usage and credits from the rollups, as a table, CSV or JSON.")

    @OptionGroup var options: LedgerOptions
    @Option var tenant: String?
    @Option var model: String?
    @Option var site: String?
    @Option(help: "Unix seconds, a date or an RFC 3339 time (inclusive).") var from: String?
    @Option(help: "Unix seconds, a date or an RFC 3339 time (exclusive).") var to: String?
    @Option(name: .customLong("group-by"), help: "Comma-separated: tenant, model, site, and hour or day.") var groupBy =
        "tenant,model,site"
    @Option(help: "table, csv or json.") var format = "table"

    func run() async throws {
        let config = try options.resolve()
        var query = LedgerStore.SummaryQuery()
        query.tenant = tenant
        query.model = model
        query.site = site
        do {
            query.from = try from.map { try LedgerAPI.parseTime($0, name: "--from") }
            query.to = try to.map { try LedgerAPI.parseTime($0, name: "--to") }
            query.groupBy = try LedgerAPI.parseGroupBy(groupBy)
        } catch let error as LedgerError {
            throw ValidationError(error.message)
        }
        let rows = try LedgerStore(directory: config.ledger.data).summary(query)
        switch format {
        case "json":
            let encoder = JSONEncoder()
            encoder.keyEncodingStrategy = .convertToSnakeCase
            encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
            print(String(decoding: try encoder.encode(["rows": rows]), as: UTF8.self))
        case "csv", "table":
            let timeColumn = query.groupBy.contains("day") ? "day" : query.groupBy.contains("hour") ? "hour" : nil
            let dimensions =
                ["tenant", "model", "site"].filter { query.groupBy.contains($0) } + (timeColumn.map { [$0] } ?? [])
            let header = dimensions + ["records", "prompt_tokens", "completion_tokens", "total_tokens", "credits"]
            let formatter = ISO8601DateFormatter()
            let lines: [[String]] = rows.map { row in
                var cells: [String] = []
                if query.groupBy.contains("tenant") { cells.append(row.tenant ?? "") }
                if query.groupBy.contains("model") { cells.append(row.model ?? "") }
                if query.groupBy.contains("site") { cells.append(row.site ?? "") }
                if timeColumn != nil {
                    cells.append(
                        row.period.map { formatter.string(from: Date(timeIntervalSince1970: Double($0))) } ?? "")
                }
                return cells + [
                    String(row.records), String(row.promptTokens), String(row.completionTokens),
                    String(row.totalTokens), String(format: "%.6f", row.credits),
                ]
            }
            if format == "csv" {
                print(header.joined(separator: ","))
                for line in lines { print(line.map { $0.contains(",") ? "\"\($0)\"" : $0 }.joined(separator: ",")) }
            } else {
                let widths = header.indices.map { column in
                    ([header[column]] + lines.map { $0[column] }).map(\.count).max() ?? 0
                }
                func render(_ cells: [String]) -> String {
                    cells.enumerated().map {
                        $0.element.padding(toLength: widths[$0.offset], withPad: " ", startingAt: 0)
                    }.joined(separator: "  ")
                }
                print(render(header))
                for line in lines { print(render(line)) }
            }
        default:
            throw ValidationError("--format: table, csv or json")
        }
    }
}

struct LedgerAllot: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "allot",
        abstract: "Allot tokens or credits to a tenant through a running ledger (admin key from the configuration).")

    @OptionGroup var options: LedgerOptions
    @Argument var tenant: String
    @Option var tokens: Int64?
    @Option var credits: Double?
    @Option var note: String?
    @Option(help: "The ledger's HOST:PORT (default: ledger.listen).") var ledger: String?

    func run() async throws {
        let config = try options.resolve()
        guard let key = config.ledger.settings.adminKey else {
            throw ValidationError("no ledger.admin-key in the configuration")
        }
        if let tokens, !Amounts.allotmentTokens.contains(tokens) {
            throw ValidationError(
                "--tokens: \(Amounts.allotmentTokens.lowerBound) to \(Amounts.allotmentTokens.upperBound)")
        }
        if let credits, !(credits.isFinite && Amounts.allotmentCredits.contains(credits)) {
            throw ValidationError("--credits: a number from -1e9 to 1e9")
        }
        let address = ledger.flatMap(ListenAddress.init) ?? config.ledger.listen
        var body: [String: Any] = ["tenant": tenant]
        if let tokens { body["tokens"] = tokens }
        if let credits { body["credits"] = credits }
        if let note { body["note"] = note }
        let (status, text) = try await httpPost(
            "http://\(address.host.contains(":") ? "[\(address.host)]" : address.host):\(address.port)/v1/allotments",
            body: try JSONSerialization.data(withJSONObject: body),
            headers: ["Authorization": "Bearer \(key)", "Content-Type": "application/json"])
        print(text)
        if status != 200 { throw ExitCode(1) }
    }
}
