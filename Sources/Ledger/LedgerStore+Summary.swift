import Crypto
import Foundation
import GRDB

// Summaries: usage and credits from the rollups, filtered and grouped.
extension LedgerStore {
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
}
