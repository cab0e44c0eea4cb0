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

    // MARK: - Allotments and balances

    public struct Balance: Codable, Sendable, Equatable {
        public var tenant: String
        public var allottedTokens: Int64
        public var consumedTokens: Int64
        public var balanceTokens: Int64
        public var allottedCredits: Double
        public var consumedCredits: Double
        public var balanceCredits: Double
    }

    /// Records an allotment. Out-of-range amounts, or totals that would pass
    /// `Amounts.totalLimit`, throw `LedgerStoreError.outOfRange` and store nothing.
    public func allot(
        tenant: String, tokens: Int64, credits: Double, note: String?, now: Double = Date().timeIntervalSince1970
    ) throws {
        guard Amounts.allotmentTokens.contains(tokens) else {
            throw LedgerStoreError.outOfRange(
                "tokens must be \(Amounts.allotmentTokens.lowerBound) to \(Amounts.allotmentTokens.upperBound)")
        }
        guard credits.isFinite, Amounts.allotmentCredits.contains(credits), let micro = Amounts.integer(credits * 1e6)
        else {
            throw LedgerStoreError.outOfRange("credits must be a number from -1e9 to 1e9")
        }
        try pool.write { db in
            let totals = try Self.totals(db, tenant: tenant)
            guard Amounts.add(totals.allottedTokens, tokens) != nil, Amounts.add(totals.allottedMicro, micro) != nil
            else {
                throw LedgerStoreError.outOfRange(
                    "the tenant's allotted total would exceed the ledger's bound of \(Amounts.totalLimit)")
            }
            try db.execute(
                sql: "INSERT INTO allotments (tenant, tokens, micro_credits, note, at) VALUES (?, ?, ?, ?, ?)",
                arguments: [tenant, tokens, micro, note, now])
            try db.execute(
                sql: """
                    INSERT INTO tenant_totals (tenant, allotted_tokens, allotted_micro) VALUES (?, ?, ?)
                    ON CONFLICT DO UPDATE SET allotted_tokens = allotted_tokens + excluded.allotted_tokens,
                        allotted_micro = allotted_micro + excluded.allotted_micro
                    """,
                arguments: [tenant, tokens, micro])
        }
    }

    struct Totals {
        var allottedTokens: Int64 = 0
        var allottedMicro: Int64 = 0
        var consumedTokens: Int64 = 0
        var consumedMicro: Int64 = 0
    }

    /// A tenant's stored totals, read as integers (a value SQLite holds as anything else, which
    /// only a damaged or hand-edited file can have, is an error, not a trap).
    static func totals(_ db: Database, tenant: String) throws -> Totals {
        guard
            let row = try Row.fetchOne(
                db,
                sql:
                    "SELECT allotted_tokens, allotted_micro, consumed_tokens, consumed_micro FROM tenant_totals WHERE tenant = ?",
                arguments: [tenant])
        else { return Totals() }
        func integer(_ index: Int) throws -> Int64 {
            guard case .int64(let value) = (row[index] as DatabaseValue).storage else {
                throw LedgerStoreError.unreadable("tenant_totals: tenant \(quoted(tenant)): a total is not an integer")
            }
            return value
        }
        return Totals(
            allottedTokens: try integer(0), allottedMicro: try integer(1), consumedTokens: try integer(2),
            consumedMicro: try integer(3))
    }

    public func balance(tenant: String) throws -> Balance {
        try pool.read { db in
            let totals = try Self.totals(db, tenant: tenant)
            // Totals are within ±Amounts.totalLimit, so these differences fit; checked anyway.
            let (tokens, overflow1) = totals.allottedTokens.subtractingReportingOverflow(totals.consumedTokens)
            let (micro, overflow2) = totals.allottedMicro.subtractingReportingOverflow(totals.consumedMicro)
            guard !overflow1, !overflow2 else {
                throw LedgerStoreError.outOfRange("tenant \(quoted(tenant)): balance out of range")
            }
            return Balance(
                tenant: tenant, allottedTokens: totals.allottedTokens, consumedTokens: totals.consumedTokens,
                balanceTokens: tokens,
                allottedCredits: Double(totals.allottedMicro) / 1e6,
                consumedCredits: Double(totals.consumedMicro) / 1e6,
                balanceCredits: Double(micro) / 1e6)
        }
    }

    // MARK: - Summaries

    public struct SummaryQuery: Sendable {
        public var tenant: String?
        public var model: String?
        public var site: String?
        /// Unix seconds, inclusive start, exclusive end (within `Amounts.time`).
        public var from: Int64?
        public var to: Int64?
        /// Subset of tenant, model, site, and one of hour or day.
        public var groupBy: [String] = ["tenant", "model", "site"]
        public init() {}
    }

    public struct SummaryRow: Codable, Sendable, Equatable {
        public var tenant: String?
        public var model: String?
        public var site: String?
        /// The hour or day (Unix seconds of its start) when grouped by time.
        public var period: Int64?
        public var records: Int64
        public var promptTokens: Int64
        public var completionTokens: Int64
        public var totalTokens: Int64
        public var credits: Double
    }

    public static let groupings: Set<String> = ["tenant", "model", "site", "hour", "day"]

    public func summary(_ query: SummaryQuery) throws -> [SummaryRow] {
        let byDay = query.groupBy.contains("day")
        let table = byDay ? "usage_daily" : "usage_hourly"
        let time = byDay ? "day" : "hour"
        var conditions: [String] = []
        var arguments: [DatabaseValueConvertible?] = []
        for (column, value) in [("tenant", query.tenant), ("model", query.model), ("site", query.site)] {
            if let value {
                conditions.append("\(column) = ?")
                arguments.append(value)
            }
        }
        if let from = query.from {
            conditions.append("\(time) >= ?")
            arguments.append(byDay ? from / 86400 * 86400 : from / 3600 * 3600)
        }
        if let to = query.to {
            conditions.append("\(time) < ?")
            arguments.append(to)
        }
        let dimensions = ["tenant", "model", "site"].filter { query.groupBy.contains($0) }
        var columns = dimensions
        if query.groupBy.contains("hour") || byDay { columns.append(time) }
        let select =
            (columns.isEmpty ? [] : [columns.joined(separator: ", ")]) + [
                "SUM(records)", "SUM(prompt_tokens)", "SUM(completion_tokens)", "SUM(micro_credits)",
            ]
        var sql = "SELECT \(select.joined(separator: ", ")) FROM \(table)"
        if !conditions.isEmpty { sql += " WHERE " + conditions.joined(separator: " AND ") }
        if !columns.isEmpty {
            sql += " GROUP BY \(columns.joined(separator: ", ")) ORDER BY \(columns.joined(separator: ", "))"
        }
        return try pool.read { db in
            try Row.fetchAll(db, sql: sql, arguments: StatementArguments(arguments)).compactMap {
                row throws -> SummaryRow? in
                var index = 0
                func next<T: DatabaseValueConvertible>() -> T? {
                    defer { index += 1 }
                    return row[index]
                }
                var result = SummaryRow(records: 0, promptTokens: 0, completionTokens: 0, totalTokens: 0, credits: 0)
                if dimensions.contains("tenant") { result.tenant = next() }
                if dimensions.contains("model") { result.model = next() }
                if dimensions.contains("site") { result.site = next() }
                if columns.count > dimensions.count { result.period = next() }
                guard let records: Int64 = next(), records > 0 else { return nil }
                result.records = records
                result.promptTokens = next() ?? 0
                result.completionTokens = next() ?? 0
                let (total, overflow) = result.promptTokens.addingReportingOverflow(result.completionTokens)
                guard !overflow else { throw LedgerStoreError.outOfRange("total tokens of a summary row out of range") }
                result.totalTokens = total
                result.credits = Double(next() ?? Int64(0)) / 1e6
                return result
            }
        }
    }

    /// Every stored record id.
    public func recordIDs() throws -> [String] {
        try pool.read { db in try String.fetchAll(db, sql: "SELECT id FROM records ORDER BY seq") }
    }

    // MARK: - Verification

    public struct Verification: Sendable {
        public var batches = 0
        public var records = 0
        public var head = LedgerStore.genesis
        public var problems: [String] = []
    }

    /// Recomputes every record's hash from its fields and the whole chain; checks that every
    /// record belongs to a batch and that the rollups and tenant totals equal the records.
    public func verify() throws -> Verification {
        let damage = try integrityProblems()
        guard damage.isEmpty else {
            var result = Verification()
            result.problems = damage.map { "\(path): damaged (quick_check): \($0)" }
            return result
        }
        return try pool.read { db in
            var result = Verification()
            var previous = Self.genesis
            let batches = try Row.fetchCursor(db, sql: "SELECT seq, records, prev_hash, hash FROM batches ORDER BY seq")
            let recordsOf = try db.makeStatement(
                sql: """
                    SELECT seq, id, site, tenant, model, prompt_tokens, completion_tokens, started_at, ended_at, request_id,
                        micro_credits, content_hash FROM records WHERE batch = ? ORDER BY seq
                    """)
            while let batch = try batches.next() {
                result.batches += 1
                // Values are read as optionals: a hand-edited file may hold any type anywhere,
                // and verify reports that instead of trapping on it.
                guard let seq = Int64.fromDatabaseValue(batch[0]), let count = Int.fromDatabaseValue(batch[1]),
                    let prev = String.fromDatabaseValue(batch[2]), let hash = String.fromDatabaseValue(batch[3])
                else {
                    result.problems.append("a batch row holds values of the wrong type: \(batch)")
                    continue
                }
                if prev != previous {
                    result.problems.append(
                        "batch \(seq): previous hash does not match batch before it (a batch was removed or reordered)")
                }
                var entries: [(String, Int64)] = []
                let rows = try Row.fetchAll(recordsOf, arguments: [seq])
                for row in rows {
                    guard let id = String.fromDatabaseValue(row[1]), let site = String.fromDatabaseValue(row[2]),
                        let tenant = String.fromDatabaseValue(row[3]), let model = String.fromDatabaseValue(row[4]),
                        let prompt = Int.fromDatabaseValue(row[5]), let completion = Int.fromDatabaseValue(row[6]),
                        let started = Double.fromDatabaseValue(row[7]), let ended = Double.fromDatabaseValue(row[8]),
                        let credits = Int64.fromDatabaseValue(row[10]), let stored = String.fromDatabaseValue(row[11])
                    else {
                        result.problems.append("batch \(seq): a record row holds values of the wrong type: \(row)")
                        continue
                    }
                    let requestID = String.fromDatabaseValue(row[9])
                    let record = UsageRecord(
                        id: id, site: site, tenant: tenant, model: model, promptTokens: prompt,
                        completionTokens: completion,
                        startedAt: started, endedAt: ended, requestID: requestID)
                    if record.contentHash != stored {
                        result.problems.append(
                            "record \(row[0] as DatabaseValue) (id \(record.id)) in batch \(seq): content altered")
                    }
                    entries.append((record.contentHash, credits))
                }
                result.records += rows.count
                if rows.count != count {
                    result.problems.append("batch \(seq): \(rows.count) records, \(count) were written")
                }
                if Self.chain(previous: prev, entries) != hash {
                    result.problems.append("batch \(seq): hash does not match its records")
                }
                previous = hash
            }
            result.head = previous
            let orphans =
                try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM records WHERE batch NOT IN (SELECT seq FROM batches)")
                ?? 0
            if orphans > 0 { result.problems.append("\(orphans) records belong to no batch") }
            let rollupMismatch =
                try Int.fetchOne(
                    db,
                    sql: """
                        SELECT COUNT(*) FROM (
                            SELECT tenant, model, site, CAST(ended_at AS INTEGER) / 3600 * 3600 AS hour, COUNT(*) AS n, SUM(prompt_tokens) AS p,
                                SUM(completion_tokens) AS c, SUM(micro_credits) AS m FROM records GROUP BY 1, 2, 3, 4) r
                        FULL OUTER JOIN usage_hourly u USING (tenant, model, site, hour)
                        WHERE r.n IS NOT u.records OR r.p IS NOT u.prompt_tokens OR r.c IS NOT u.completion_tokens OR r.m IS NOT u.micro_credits
                        """) ?? 0
            if rollupMismatch > 0 { result.problems.append("\(rollupMismatch) hourly rollups differ from the records") }
            return result
        }
    }
}

/// Why the store refused an operation.
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
