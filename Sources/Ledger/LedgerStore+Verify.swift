import Crypto
import Foundation
import GRDB

// Verification: the hash chain, every record's content, and the rollups, checked again.
extension LedgerStore {
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
