import ArgumentParser
import AsyncHTTPClient
import Foundation
import LedgerSync
import NIOCore
import NIOFoundationCompat
import Synchronization

/// `tdn-ledger-bench`: concurrent edges posting signed usage batches to a running ledger.
/// Prints records and requests acknowledged per second and the latency percentiles.
@available(macOS 10.15, *)
struct LedgerBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "tdn-ledger-bench")

    @Option(help: "The ledger's base URL.") var url: String
    @Option(help: "Edge id (the site of every record).") var edge: String
    @Option(help: "The edge's key.") var key: String
    @Option(help: "Tenants, comma-separated.") var tenants = "acme,globex"
    @Option(help: "Models, comma-separated.") var models = "llama-13b,mistral-7b"
    @Option(help: "Records per request.") var batch = 100
    @Option(help: "Concurrent clients.") var clients = 16
    @Option(help: "Seconds to run.") var duration = 10.0
    @Option(help: "A prefix for record ids (runs must not collide).") var prefix = UUID().uuidString

    func run() async throws { try await execute() }

    func execute() async throws {
        let client = HTTPClient(eventLoopGroupProvider: .singleton, configuration: .init(connectionPool: .init(idleTimeout: .seconds(60), concurrentHTTP1ConnectionsPerHostSoftLimit: clients)))
        let tenantList = tenants.split(separator: ",").map(String.init)
        let modelList = models.split(separator: ",").map(String.init)
        let stats = Stats()
        let (batch, prefix, edge, key, url) = (self.batch, self.prefix, self.edge, self.key, self.url)
        let start = Date()
        let deadline = start.addingTimeInterval(duration)
        let path = "/v1/usage"
        await withTaskGroup(of: Void.self) { group in
            for worker in 0..<clients {
                group.addTask {
                    var sequence = 0
                    var mine: [Double] = []
                    while Date() < deadline {
                        let now = Date().timeIntervalSince1970
                        let records = (0..<batch).map { index in
                            UsageRecord(
                                id: "\(prefix)-\(worker)-\(sequence)-\(index)", site: edge, tenant: tenantList[(sequence + index) % tenantList.count],
                                model: modelList[index % modelList.count], promptTokens: 100 + index, completionTokens: 200 + index,
                                startedAt: now - 2, endedAt: now, requestID: nil)
                        }
                        sequence += 1
                        guard let body = try? JSONEncoder().encode(UsageBatch(records: records)) else { continue }
                        let stamp = String(Int(now))
                        var request = HTTPClientRequest(url: url + path)
                        request.method = .POST
                        request.headers.add(name: "Content-Type", value: "application/json")
                        request.headers.add(name: "X-TDN-Edge", value: edge)
                        request.headers.add(name: "X-TDN-Timestamp", value: stamp)
                        request.headers.add(name: "X-TDN-Signature", value: RequestSignature.sign(key: key, method: "POST", target: path, timestamp: stamp, body: body))
                        request.body = .bytes(ByteBuffer(data: body))
                        let began = Date()
                        do {
                            let response = try await client.execute(request, timeout: .seconds(30))
                            _ = try await response.body.collect(upTo: 1 << 20)
                            if response.status.code == 200 { mine.append(Date().timeIntervalSince(began)) } else { stats.failures.withLock { $0 += 1 } }
                        } catch {
                            stats.failures.withLock { $0 += 1 }
                        }
                    }
                    stats.latencies.withLock { $0 += mine }
                }
            }
        }
        let elapsed = Date().timeIntervalSince(start)
        try? await client.shutdown()
        let sorted = stats.latencies.withLock { $0 }.sorted()
        func percentile(_ p: Double) -> Double { sorted.isEmpty ? 0 : sorted[min(sorted.count - 1, Int(Double(sorted.count) * p))] * 1000 }
        print(String(format: "batch %d, %d clients, %.1f s: %.0f records/s acknowledged, %.0f requests/s; latency p50 %.1f ms, p99 %.1f ms; %d failed",
            batch, clients, elapsed, Double(sorted.count * batch) / elapsed, Double(sorted.count) / elapsed, percentile(0.5), percentile(0.99), stats.failures.withLock { $0 }))
    }
}

final class Stats: Sendable {
    let latencies = Mutex<[Double]>([])
    let failures = Mutex(0)
}

do {
    let command = try LedgerBench.parse()
    try await command.execute()
} catch {
    LedgerBench.exit(withError: error)
}
