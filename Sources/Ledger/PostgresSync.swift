import Foundation
import GRDB
import Logging
import PostgresNIO
import Synchronization

/// Where a node's acknowledged records go when one machine is outgrown: a central PostgreSQL.
public struct SyncSettings: Sendable {
    public var host = "127.0.0.1"
    public var port = 5432
    public var user = "tdn"
    public var password: String?
    public var database = "tdn"
    /// This ledger's name in the central store (one cursor per node).
    public var node = "node1"
    /// Records per transaction.
    public var batch = 2_000
    /// Seconds between polls when there is nothing to send.
    public var interval = 1.0
    public init() {}
}

/// Ships records from the node's SQLite to PostgreSQL in order of their sequence number.
///
/// Exactly once: each transaction inserts the records with `ON CONFLICT (id) DO NOTHING`,
/// adds only the rows it actually inserted to the central rollups, and moves this node's
/// cursor, all or nothing. The cursor lives in PostgreSQL, beside the data it describes, so a
/// crash or a lost connection at any point resumes exactly where the last commit left off.
/// Failures back off from 0.5 s to 30 s.
public final class PostgresSync: Sendable {
    public let settings: SyncSettings
    private let store: LedgerStore
    private let configuration: PostgresConnection.Configuration
    private let logger: Logger

    public init(store: LedgerStore, settings: SyncSettings, logger: Logger) {
        self.store = store
        self.settings = settings
        self.logger = logger
        var configuration = PostgresConnection.Configuration(
            host: settings.host, port: settings.port, username: settings.user, password: settings.password,
            database: settings.database,
            tls: .disable)
        configuration.options.connectTimeout = .seconds(5)
        self.configuration = configuration
    }

    static let schema: [PostgresQuery] = [
        """
        CREATE TABLE IF NOT EXISTS ledger_records (
            id TEXT PRIMARY KEY, node TEXT NOT NULL, site TEXT NOT NULL, tenant TEXT NOT NULL, model TEXT NOT NULL,
            prompt_tokens BIGINT NOT NULL, completion_tokens BIGINT NOT NULL,
            started_at DOUBLE PRECISION NOT NULL, ended_at DOUBLE PRECISION NOT NULL, request_id TEXT,
            micro_credits BIGINT NOT NULL, content_hash TEXT NOT NULL)
        """,
        """
        CREATE TABLE IF NOT EXISTS ledger_usage_hourly (
            tenant TEXT NOT NULL, model TEXT NOT NULL, site TEXT NOT NULL, hour BIGINT NOT NULL,
            records BIGINT NOT NULL, prompt_tokens BIGINT NOT NULL, completion_tokens BIGINT NOT NULL, micro_credits BIGINT NOT NULL,
            PRIMARY KEY (tenant, model, site, hour))
        """,
        "CREATE TABLE IF NOT EXISTS ledger_sync_cursors (node TEXT PRIMARY KEY, seq BIGINT NOT NULL, updated_at TIMESTAMPTZ NOT NULL DEFAULT now())",
    ]

    /// Runs until cancelled: one connection, made again after any error with back-off; the
    /// schema is created on each new connection, then records are shipped.
    public func run() async {
        var delay = 0.5
        var connection: PostgresConnection? = nil
        var nextID = 0
        while !Task.isCancelled {
            do {
                if connection == nil {
                    nextID += 1
                    let made = try await Self.within(seconds: 10) { [configuration, logger, nextID] in
                        try await PostgresConnection.connect(configuration: configuration, id: nextID, logger: logger)
                    }
                    connection = made
                    try await Self.guarded(made, seconds: 5) {
                        for statement in Self.schema { try await made.query(statement, logger: self.logger) }
                    }
                }
                let current = connection!
                let sent = try await Self.guarded(current, seconds: 5) { try await self.shipOnce(on: current) }
                delay = 0.5
                if sent == 0 { try await Task.sleep(for: .milliseconds(Int64(settings.interval * 1000))) }
            } catch {
                if Task.isCancelled { break }
                logger.warning(
                    "ledger sync to \(settings.host):\(settings.port)/\(settings.database): \(String(reflecting: error)); retrying in \(delay) s"
                )
                try? await connection?.close()
                connection = nil
                try? await Task.sleep(for: .milliseconds(Int64(delay * 1000)))
                delay = min(30, delay * 2)
            }
        }
        try? await connection?.close()
    }

    /// `work` with a deadline: a connection that stops answering (a server that went away in
    /// the middle of a query) is closed and abandoned, so that the loop connects again. The
    /// wait does not depend on the stuck call ever returning.
    static func guarded<T: Sendable>(
        _ connection: PostgresConnection, seconds: Double, _ work: @escaping @Sendable () async throws -> T
    ) async throws -> T {
        do {
            return try await within(seconds: seconds, work)
        } catch {
            try? await connection.close()
            throw error
        }
    }

    struct Timeout: Error, CustomStringConvertible {
        var description: String { "timed out" }
    }

    /// The result of `work`, or `Timeout` after `seconds` (then `work` is cancelled and left).
    static func within<T: Sendable>(seconds: Double, _ work: @escaping @Sendable () async throws -> T) async throws -> T
    {
        let once = Once()
        return try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<T, Error>) in
            let timer = TaskBox()
            let task = Task {
                let result: Result<T, Error>
                do { result = .success(try await work()) } catch { result = .failure(error) }
                if once.claim() {
                    // Done first: the timer is not left sleeping (one per sync cycle otherwise).
                    timer.task.withLock { $0?.cancel() }
                    continuation.resume(with: result)
                }
            }
            let sleeper = Task {
                try? await Task.sleep(for: .milliseconds(Int64(seconds * 1000)))
                if !Task.isCancelled, once.claim() {
                    task.cancel()
                    continuation.resume(throwing: Timeout())
                }
            }
            timer.task.withLock { $0 = sleeper }
            if once.isClaimed { sleeper.cancel() }
        }
    }

    /// Sends the next records after this node's cursor in one transaction; returns how many.
    @discardableResult
    public func shipOnce(on connection: PostgresConnection) async throws -> Int {
        let node = settings.node
        let cursorRows = try await connection.query(
            "SELECT seq FROM ledger_sync_cursors WHERE node = \(node)", logger: logger)
        var cursor: Int64 = 0
        for try await seq in cursorRows.decode(Int64.self) { cursor = seq }
        let rows = try store.records(after: cursor, limit: settings.batch)
        guard let last = rows.last?.seq else { return 0 }
        let ids = rows.map(\.record.id)
        let sites = rows.map(\.record.site)
        let tenants = rows.map(\.record.tenant)
        let models = rows.map(\.record.model)
        let prompts = rows.map { Int64($0.record.promptTokens) }
        let completions = rows.map { Int64($0.record.completionTokens) }
        let starts = rows.map(\.record.startedAt)
        let ends = rows.map(\.record.endedAt)
        let requests = rows.map { $0.record.requestID ?? "" }
        let credits = rows.map(\.microCredits)
        let hashes = rows.map(\.contentHash)
        let logger = self.logger
        // BEGIN … COMMIT by hand: after an error the connection is closed rather than rolled
        // back (the server rolls back a transaction whose connection goes away), so that a
        // server that vanished mid-transaction cannot leave us waiting on a ROLLBACK.
        try await connection.query("BEGIN", logger: logger)
        do {
            // Another process may ship for the same node: the cursor row is locked and checked.
            let locked = try await connection.query(
                "SELECT seq FROM ledger_sync_cursors WHERE node = \(node) FOR UPDATE", logger: logger)
            var current: Int64 = 0
            for try await seq in locked.decode(Int64.self) { current = seq }
            guard current == cursor else {
                try await connection.query("ROLLBACK", logger: logger)
                return 0
            }
            try await connection.query(
                """
                WITH incoming AS (
                    SELECT * FROM unnest(\(ids)::text[], \(sites)::text[], \(tenants)::text[], \(models)::text[], \(prompts)::bigint[],
                        \(completions)::bigint[], \(starts)::float8[], \(ends)::float8[], \(requests)::text[], \(credits)::bigint[], \(hashes)::text[])
                    AS t(id, site, tenant, model, prompt_tokens, completion_tokens, started_at, ended_at, request_id, micro_credits, content_hash)),
                inserted AS (
                    INSERT INTO ledger_records (id, node, site, tenant, model, prompt_tokens, completion_tokens, started_at, ended_at,
                        request_id, micro_credits, content_hash)
                    SELECT id, \(node), site, tenant, model, prompt_tokens, completion_tokens, started_at, ended_at,
                        NULLIF(request_id, ''), micro_credits, content_hash FROM incoming
                    ON CONFLICT (id) DO NOTHING
                    RETURNING tenant, model, site, ended_at, prompt_tokens, completion_tokens, micro_credits)
                INSERT INTO ledger_usage_hourly (tenant, model, site, hour, records, prompt_tokens, completion_tokens, micro_credits)
                SELECT tenant, model, site, (trunc(ended_at)::bigint / 3600) * 3600, count(*), sum(prompt_tokens), sum(completion_tokens),
                    sum(micro_credits) FROM inserted GROUP BY 1, 2, 3, 4
                ON CONFLICT (tenant, model, site, hour) DO UPDATE SET
                    records = ledger_usage_hourly.records + excluded.records,
                    prompt_tokens = ledger_usage_hourly.prompt_tokens + excluded.prompt_tokens,
                    completion_tokens = ledger_usage_hourly.completion_tokens + excluded.completion_tokens,
                    micro_credits = ledger_usage_hourly.micro_credits + excluded.micro_credits
                """, logger: logger)
            try await connection.query(
                """
                INSERT INTO ledger_sync_cursors (node, seq) VALUES (\(node), \(last))
                ON CONFLICT (node) DO UPDATE SET seq = excluded.seq, updated_at = now()
                """, logger: logger)
            try await connection.query("COMMIT", logger: logger)
        } catch {
            try? await connection.close()
            throw error
        }
        return rows.count
    }
}

extension LedgerStore {
    /// A stored record with what the store added to it.
    public struct StoredRecord: Sendable {
        public var seq: Int64
        public var record: UsageRecord
        public var microCredits: Int64
        public var contentHash: String
    }

    /// Records after sequence number `seq`, in order.
    public func records(after seq: Int64, limit: Int) throws -> [StoredRecord] {
        try pool.read { db in
            try Row.fetchAll(
                db,
                sql: """
                    SELECT seq, id, site, tenant, model, prompt_tokens, completion_tokens, started_at, ended_at, request_id, micro_credits,
                        content_hash FROM records WHERE seq > ? ORDER BY seq LIMIT ?
                    """, arguments: [seq, limit]
            ).map { row in
                StoredRecord(
                    seq: row[0],
                    record: UsageRecord(
                        id: row[1], site: row[2], tenant: row[3], model: row[4], promptTokens: row[5],
                        completionTokens: row[6],
                        startedAt: row[7], endedAt: row[8], requestID: row[9]),
                    microCredits: row[10], contentHash: row[11])
            }
        }
    }
}

/// True for the first caller only.
/// A task handle shared between tasks.
final class TaskBox: Sendable {
    let task = Mutex<Task<Void, Never>?>(nil)
}

final class Once: Sendable {
    private let done = Mutex(false)
    var isClaimed: Bool { done.withLock { $0 } }
    func claim() -> Bool {
        done.withLock { done in
            defer { done = true }
            return !done
        }
    }
}
