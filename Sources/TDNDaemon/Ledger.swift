import ArgumentParser
import Foundation
import Hummingbird
import Ledger
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
        let app = httpService(
            LedgerAPI.router(store: store, settings: settings, logger: logger), address: config.ledger.listen,
            serverName: "tdnd-ledger", what: "ledger API", limits: config.http, logger: logger)
        logger.info("ledger: \(store.path)")
        var services: [ServiceGroupConfiguration.ServiceConfiguration] = [.init(service: app)]
        if let sync = config.ledger.sync {
            logger.info("ledger sync: node \(sync.node) to postgres \(sync.host):\(sync.port)/\(sync.database)")
            services.append(
                .init(service: SyncService(sync: PostgresSync(store: store, settings: sync, logger: logger))))
        }
        let group = ServiceGroup(
            configuration: .init(services: services, gracefulShutdownSignals: [.sigterm, .sigint], logger: logger))
        defer {
            do { try store.close() } catch { logger.error("ledger: cannot close \(store.path): \(error)") }
        }
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
