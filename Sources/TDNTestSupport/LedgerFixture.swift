import Foundation
import Ledger
import NIOHTTP1

/// The ledger every ledger test runs: two edges with their keys, an admin key, two tenants and
/// two models' rates, the same in process (`settings`) and in a `tdnd.yaml` (`yaml`).
public enum LedgerFixture {
    public static let edgeKey = "fra1-secret-key-0123456789"
    public static let otherKey = "par1-secret-key-0123456789"
    public static let adminKey = "ledger-admin-key-0123456789"

    public static var settings: LedgerSettings {
        var settings = LedgerSettings()
        settings.clockSkew = 60
        settings.adminKey = adminKey
        settings.edges = [ExactKey("fra1"): edgeKey, ExactKey("par1"): otherKey]
        settings.tenants = [ExactKey("acme"), ExactKey("globex")]
        settings.rates = [
            ExactKey("llama-13b"): Rate(prompt: 0.2, completion: 0.6),
            ExactKey("llama-70b"): Rate(prompt: 1, completion: 3),
        ]
        return settings
    }

    /// The configuration file of `settings`, with `top` before the `ledger:` section and
    /// `sync` inside it.
    public static func yaml(sync: String = "", top: String = "") -> String {
        """
        \(top)
        ledger:\(sync)
          listen: 127.0.0.1:0
          data: data
          clock-skew: 60
          admin-key: \(adminKey)
          edges: {fra1: \(edgeKey), par1: \(otherKey)}
          tenants: [acme, globex]
          rates:
            llama-13b: {prompt: 0.2, completion: 0.6}
            llama-70b: {prompt: 1, completion: 3}
        """
    }

    public static func record(
        _ id: String, site: String = "fra1", tenant: String = "acme", model: String = "llama-13b", prompt: Int = 100,
        completion: Int = 50
    ) -> UsageRecord {
        UsageRecord(
            id: id, site: site, tenant: tenant, model: model, promptTokens: prompt, completionTokens: completion,
            startedAt: 1_795_370_000, endedAt: 1_795_370_002.5, requestID: "req-\(id)")
    }
}

/// A ledger API to send requests to: the router in process, a live socket, or a `tdnd ledger
/// serve` process. The tests are written against this, so one body runs against each.
public protocol LedgerEndpoint: Sendable {
    /// One request as given (no signature added): the status and the body.
    func request(
        _ method: HTTPMethod, _ path: String, headers: [(String, String)], body: Data
    ) async throws -> (
        status: Int, body: Data
    )
    var store: LedgerStore { get throws }
}

extension LedgerEndpoint {
    /// A signed request; `timestamp` and `key` can be overridden to test the checks. The answer's
    /// JSON object (`raw`: the text, when it is not one).
    public func send(
        _ method: HTTPMethod, _ path: String, body: Data = Data(), edge: String? = "fra1",
        key: String = LedgerFixture.edgeKey, timestamp: Double = Date().timeIntervalSince1970, bearer: String? = nil,
        signedTarget: String? = nil
    ) async throws -> (status: Int, json: [String: Any]) {
        var headers: [(String, String)] = []
        let stamp = String(Int(timestamp))
        if let edge {
            headers.append(("X-TDN-Edge", edge))
            headers.append(("X-TDN-Timestamp", stamp))
            let signature = RequestSignature.sign(
                key: key, method: method.rawValue, target: signedTarget ?? path, timestamp: stamp, body: body)
            headers.append(("X-TDN-Signature", signature))
        }
        if let bearer { headers.append(("Authorization", "Bearer \(bearer)")) }
        let (status, data) = try await request(method, path, headers: headers, body: body)
        let json =
            (try? JSONSerialization.jsonObject(with: data)) as? [String: Any] ?? [
                "raw": String(decoding: data, as: UTF8.self)
            ]
        return (status, json)
    }

    public func post(
        _ records: [UsageRecord], edge: String = "fra1", key: String = LedgerFixture.edgeKey,
        timestamp: Double = Date().timeIntervalSince1970
    ) async throws -> (status: Int, json: [String: Any]) {
        try await send(
            .POST, "/v1/usage", body: try JSONEncoder().encode(UsageBatch(records: records)), edge: edge, key: key,
            timestamp: timestamp)
    }

    public func recordCount() throws -> Int { try store.verify().records }
}
