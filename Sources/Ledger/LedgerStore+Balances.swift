import Crypto
import Foundation
import GRDB

// Allotments and balances: what each tenant was given and has used.
extension LedgerStore {
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
}
