import Crypto
import Foundation
import GRDB

/// The ledger's durable store: one SQLite file in WAL mode with `synchronous = FULL`, so that a
/// committed transaction is on disk. Batches form a hash chain; records keep the credits they
/// were charged; hourly and daily rollups and per-tenant totals are updated in the same
/// transaction as the records they count.
public final class LedgerStore: Sendable {
    public let path: String
    let pool: DatabasePool

    /// Opens (or creates) `directory/ledger.sqlite`. With `check`, SQLite's `quick_check`
    /// runs first: a file damaged in the middle (a torn page, bytes overwritten) opens without
    /// complaint and would accept writes into a broken b-tree, so it is refused instead.
    public init(directory: String, check: Bool = true) throws {
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        path = directory + "/ledger.sqlite"
        var configuration = Configuration()
        configuration.prepareDatabase { db in
            try db.execute(sql: "PRAGMA synchronous = FULL")
        }
        pool = try DatabasePool(path: path, configuration: configuration)
        if check {
            let problems = try integrityProblems()
            if !problems.isEmpty { throw LedgerStoreError.corrupt(path: path, problems: problems) }
        }
        try Self.migrator.migrate(pool)
    }

    /// What `PRAGMA quick_check` finds wrong with the file (empty: sound).
    public func integrityProblems() throws -> [String] {
        do {
            let lines = try pool.read { db in try String.fetchAll(db, sql: "PRAGMA quick_check(20)") }
            return lines == ["ok"] ? [] : lines
        } catch let error as DatabaseError
            where error.resultCode == .SQLITE_CORRUPT || error.resultCode == .SQLITE_NOTADB
        {
            return [error.message ?? "\(error)"]
        }
    }

    /// Closes the file at shutdown, its write-ahead log checkpointed into the database first,
    /// so that a stopped ledger is one self-contained file (copied, backed up or inspected
    /// without its `-wal`). The checkpoint is explicit: GRDB closes the writer before the
    /// readers, and a read-only last connection leaves the log as it is.
    public func close() throws {
        try pool.writeWithoutTransaction { db in try db.checkpoint(.truncate) }
        try pool.close()
    }

    static var migrator: DatabaseMigrator {
        var migrator = DatabaseMigrator()
        migrator.registerMigration("v1") { db in
            try db.execute(
                sql: """
                    CREATE TABLE batches (
                        seq INTEGER PRIMARY KEY,
                        edge TEXT NOT NULL,
                        received_at REAL NOT NULL,
                        records INTEGER NOT NULL,
                        prev_hash TEXT NOT NULL,
                        hash TEXT NOT NULL);
                    CREATE TABLE records (
                        seq INTEGER PRIMARY KEY,
                        id TEXT NOT NULL UNIQUE,
                        batch INTEGER NOT NULL,
                        site TEXT NOT NULL,
                        tenant TEXT NOT NULL,
                        model TEXT NOT NULL,
                        prompt_tokens INTEGER NOT NULL,
                        completion_tokens INTEGER NOT NULL,
                        started_at REAL NOT NULL,
                        ended_at REAL NOT NULL,
                        request_id TEXT,
                        micro_credits INTEGER NOT NULL,
                        content_hash TEXT NOT NULL);
                    CREATE INDEX records_batch ON records(batch);
                    CREATE TABLE usage_hourly (
                        tenant TEXT NOT NULL, model TEXT NOT NULL, site TEXT NOT NULL, hour INTEGER NOT NULL,
                        records INTEGER NOT NULL, prompt_tokens INTEGER NOT NULL, completion_tokens INTEGER NOT NULL,
                        micro_credits INTEGER NOT NULL,
                        PRIMARY KEY (tenant, model, site, hour)) WITHOUT ROWID;
                    CREATE TABLE usage_daily (
                        tenant TEXT NOT NULL, model TEXT NOT NULL, site TEXT NOT NULL, day INTEGER NOT NULL,
                        records INTEGER NOT NULL, prompt_tokens INTEGER NOT NULL, completion_tokens INTEGER NOT NULL,
                        micro_credits INTEGER NOT NULL,
                        PRIMARY KEY (tenant, model, site, day)) WITHOUT ROWID;
                    CREATE TABLE allotments (
                        seq INTEGER PRIMARY KEY, tenant TEXT NOT NULL, tokens INTEGER NOT NULL,
                        micro_credits INTEGER NOT NULL, note TEXT, at REAL NOT NULL);
                    CREATE TABLE tenant_totals (
                        tenant TEXT PRIMARY KEY,
                        allotted_tokens INTEGER NOT NULL DEFAULT 0, allotted_micro INTEGER NOT NULL DEFAULT 0,
                        consumed_tokens INTEGER NOT NULL DEFAULT 0, consumed_micro INTEGER NOT NULL DEFAULT 0);
                    """)
        }
        return migrator
    }

    /// The hash before the first batch.
    public static let genesis = String(repeating: "0", count: 64)

    /// What became of one batch.
    public enum Outcome: Sendable, Equatable {
        /// Acknowledged: `stored` new records, `duplicates` already there with the same content.
        case stored(stored: Int, duplicates: Int)
        /// Nothing stored: ids already there with other content.
        case conflict([RecordProblem])
        /// Nothing stored: the batch would take a tenant's totals past `Amounts.totalLimit`,
        /// or its credits cannot be computed.
        case refused(String)
    }

    /// One batch, validated and authenticated, waiting to be written.
    public struct Pending: Sendable {
        public var edge: String
        public var records: [UsageRecord]
        public init(edge: String, records: [UsageRecord]) {
            self.edge = edge
            self.records = records
        }
    }

    /// Writes several batches in one transaction (one fsync): each is all-or-nothing on its own.
    public func append(
        _ batches: [Pending], rates: [ExactKey: Rate], now: Double = Date().timeIntervalSince1970
    ) throws -> [Outcome] {
        try pool.write { db in
            var head =
                try String.fetchOne(db, sql: "SELECT hash FROM batches ORDER BY seq DESC LIMIT 1") ?? Self.genesis
            var outcomes: [Outcome] = []
            for batch in batches {
                var outcome = Outcome.stored(stored: 0, duplicates: 0)
                try db.inSavepoint {
                    var fresh: [(UsageRecord, String, Int64)] = []
                    var duplicates = 0
                    var conflicts: [RecordProblem] = []
                    var seen: Set<ExactKey> = []
                    // The batch row first (its hash is set once its records are known), so that
                    // records are written once, with their batch.
                    try db.execute(
                        sql:
                            "INSERT INTO batches (edge, received_at, records, prev_hash, hash) VALUES (?, ?, 0, ?, '')",
                        arguments: [batch.edge, now, head])
                    let batchSeq = db.lastInsertedRowID
                    // Insert first; an id already there (the UNIQUE index says so) is then
                    // compared with what is stored: the common case costs one statement.
                    let insert = try db.cachedStatement(
                        sql: """
                            INSERT INTO records (id, batch, site, tenant, model, prompt_tokens, completion_tokens, started_at, ended_at,
                                request_id, micro_credits, content_hash) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                            ON CONFLICT (id) DO NOTHING
                            """)
                    let existing = try db.cachedStatement(sql: "SELECT content_hash FROM records WHERE id = ?")
                    for (index, record) in batch.records.enumerated() {
                        let hash = record.contentHash
                        // The same record twice in one batch counts once.
                        if !seen.insert(ExactKey(record.id)).inserted {
                            duplicates += 1
                            continue
                        }
                        let rate = rates[ExactKey(record.model)] ?? Rate(prompt: 0, completion: 0)
                        guard
                            let credits = rate.microCredits(
                                prompt: record.promptTokens, completion: record.completionTokens)
                        else {
                            outcome = .refused("record \(index): its credits are out of range")
                            return .rollback
                        }
                        try insert.execute(arguments: [
                            record.id, batchSeq, record.site, record.tenant, record.model, record.promptTokens,
                            record.completionTokens,
                            record.startedAt, record.endedAt, record.requestID, credits, hash,
                        ])
                        if db.changesCount == 1 {
                            fresh.append((record, hash, credits))
                        } else if try String.fetchOne(existing, arguments: [record.id]) == hash {
                            duplicates += 1
                        } else {
                            conflicts.append(
                                RecordProblem(
                                    index: index, id: record.id, reason: "id already recorded with different content"))
                        }
                    }
                    if !conflicts.isEmpty {
                        outcome = .conflict(conflicts)
                        return .rollback
                    }
                    guard !fresh.isEmpty else {
                        // Nothing new: the batch row goes too.
                        outcome = .stored(stored: 0, duplicates: duplicates)
                        return .rollback
                    }
                    let chained = Self.chain(previous: head, fresh.map { ($0.1, $0.2) })
                    try db.execute(
                        sql: "UPDATE batches SET records = ?, hash = ? WHERE seq = ?",
                        arguments: [fresh.count, chained, batchSeq])
                    struct Key: Hashable {
                        var tenant, model, site: String
                        var bucket: Int64
                    }
                    var hourly: [Key: (Int64, Int64, Int64, Int64)] = [:]
                    var consumed: [String: (Int64, Int64)] = [:]
                    // Records are bounded (Amounts), so these sums cannot overflow within one
                    // batch; the tenant's totals are checked against the limit below, and every
                    // rollup is a part of its tenant's total.
                    for (record, _, credits) in fresh {
                        let key = Key(
                            tenant: record.tenant, model: record.model, site: record.site,
                            bucket: Int64(record.endedAt) / 3600 * 3600)
                        let old = hourly[key] ?? (0, 0, 0, 0)
                        hourly[key] = (
                            old.0 + 1, old.1 + Int64(record.promptTokens), old.2 + Int64(record.completionTokens),
                            old.3 + credits
                        )
                        let tenant = consumed[record.tenant] ?? (0, 0)
                        consumed[record.tenant] = (
                            tenant.0 + Int64(record.promptTokens + record.completionTokens), tenant.1 + credits
                        )
                    }
                    for (tenant, sums) in consumed {
                        let totals = try Self.totals(db, tenant: tenant)
                        guard Amounts.add(totals.consumedTokens, sums.0) != nil,
                            Amounts.add(totals.consumedMicro, sums.1) != nil
                        else {
                            outcome = .refused(
                                "tenant \(quoted(tenant)): consumption would exceed the ledger's bound of \(Amounts.totalLimit)"
                            )
                            return .rollback
                        }
                    }
                    for (key, sums) in hourly {
                        for (table, column, bucket) in [
                            ("usage_hourly", "hour", key.bucket), ("usage_daily", "day", key.bucket / 86400 * 86400),
                        ] {
                            try db.execute(
                                sql: """
                                    INSERT INTO \(table) (tenant, model, site, \(column), records, prompt_tokens, completion_tokens, micro_credits)
                                    VALUES (?, ?, ?, ?, ?, ?, ?, ?)
                                    ON CONFLICT DO UPDATE SET records = records + excluded.records,
                                        prompt_tokens = prompt_tokens + excluded.prompt_tokens,
                                        completion_tokens = completion_tokens + excluded.completion_tokens,
                                        micro_credits = micro_credits + excluded.micro_credits
                                    """,
                                arguments: [key.tenant, key.model, key.site, bucket, sums.0, sums.1, sums.2, sums.3])
                        }
                    }
                    for (tenant, sums) in consumed {
                        try db.execute(
                            sql: """
                                INSERT INTO tenant_totals (tenant, consumed_tokens, consumed_micro) VALUES (?, ?, ?)
                                ON CONFLICT DO UPDATE SET consumed_tokens = consumed_tokens + excluded.consumed_tokens,
                                    consumed_micro = consumed_micro + excluded.consumed_micro
                                """,
                            arguments: [tenant, sums.0, sums.1])
                    }
                    head = chained
                    outcome = .stored(stored: fresh.count, duplicates: duplicates)
                    return .commit
                }
                outcomes.append(outcome)
            }
            return outcomes
        }
    }

    /// A batch's hash: SHA-256 over the previous hash and each record's content hash and
    /// charged credits, in order.
    static func chain(previous: String, _ records: [(hash: String, credits: Int64)]) -> String {
        var sha = SHA256()
        sha.update(data: Data(previous.utf8))
        for record in records {
            sha.update(data: Data("\n\(record.hash) \(record.credits)".utf8))
        }
        return hex(sha.finalize())
    }
}

public enum LedgerStoreError: Error, CustomStringConvertible, Sendable {
    /// The file is damaged: SQLite's integrity check failed.
    case corrupt(path: String, problems: [String])
    /// An amount outside `Amounts`.
    case outOfRange(String)
    /// A stored value of the wrong type (a hand-edited file).
    case unreadable(String)

    public var description: String {
        switch self {
        case .corrupt(let path, let problems):
            return
                "\(path) is damaged (SQLite quick_check: \(problems.prefix(3).joined(separator: "; "))): restore it from a backup or a replica;"
                + " it is not opened for writing"
        case .outOfRange(let message), .unreadable(let message):
            return message
        }
    }
}
