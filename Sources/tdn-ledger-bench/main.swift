import ArgumentParser
import AsyncHTTPClient
import Foundation
import Ledger
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
    @Option(
        help:
            "No network: decode one batch this many rounds with Foundation's JSONDecoder and with the ledger's strict reader, interleaved, and compare their CPU per record."
    )
    var decodeRounds: Int?

    func run() async throws { try await execute() }

    /// CPU seconds of the calling thread.
    static func threadCPU() -> Double {
        var time = timespec()
        clock_gettime(CLOCK_THREAD_CPUTIME_ID, &time)
        return Double(time.tv_sec) + Double(time.tv_nsec) / 1e9
    }

    func compareDecoders(rounds: Int) throws {
        let now = Date().timeIntervalSince1970
        let records = (0..<batch).map { index in
            UsageRecord(
                id: "\(prefix)-\(index)", site: edge, tenant: "acme", model: "llama-13b", promptTokens: 100 + index,
                completionTokens: 200 + index,
                startedAt: now - 2, endedAt: now, requestID: "chatcmpl-\(index)")
        }
        let body = try JSONEncoder().encode(UsageBatch(records: records))
        let bytes = Array(body)
        var foundation: [Double] = []
        var strict: [Double] = []
        for _ in 0..<rounds {
            var start = Self.threadCPU()
            let a = try JSONDecoder().decode(UsageBatch.self, from: body)
            foundation.append((Self.threadCPU() - start) / Double(batch))
            start = Self.threadCPU()
            let b = try UsageBatch.decode(strict: bytes)
            strict.append((Self.threadCPU() - start) / Double(batch))
            guard a.records == b.records else { throw ValidationError("the two decoders disagree") }
        }
        func median(_ values: [Double]) -> Double { values.sorted()[values.count / 2] * 1e6 }
        print(
            String(
                format:
                    "decode, batch of %d, %d rounds interleaved: JSONDecoder %.2f us/record, strict reader %.2f us/record (median); strict/JSONDecoder %.2f",
                batch, rounds, median(foundation), median(strict), median(strict) / median(foundation)))
    }

    func execute() async throws {
        if let decodeRounds { return try compareDecoders(rounds: decodeRounds) }
        let client = HTTPClient(
            eventLoopGroupProvider: .singleton,
            configuration: .init(
                connectionPool: .init(idleTimeout: .seconds(60), concurrentHTTP1ConnectionsPerHostSoftLimit: clients)))
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
                                id: "\(prefix)-\(worker)-\(sequence)-\(index)", site: edge,
                                tenant: tenantList[(sequence + index) % tenantList.count],
                                model: modelList[index % modelList.count], promptTokens: 100 + index,
                                completionTokens: 200 + index,
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
                        request.headers.add(
                            name: "X-TDN-Signature",
                            value: RequestSignature.sign(
                                key: key, method: "POST", target: path, timestamp: stamp, body: body))
                        request.body = .bytes(ByteBuffer(data: body))
                        let began = Date()
                        do {
                            let response = try await client.execute(request, timeout: .seconds(30))
                            _ = try await response.body.collect(upTo: 1 << 20)
                            if response.status.code == 200 {
                                mine.append(Date().timeIntervalSince(began))
                            } else {
                                stats.failures.withLock { $0 += 1 }
                            }
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
        func percentile(_ p: Double) -> Double {
            sorted.isEmpty ? 0 : sorted[min(sorted.count - 1, Int(Double(sorted.count) * p))] * 1000
        }
        print(
            String(
                format:
                    "batch %d, %d clients, %.1f s: %.0f records/s acknowledged, %.0f requests/s; latency p50 %.1f ms, p99 %.1f ms; %d failed",
                batch, clients, elapsed, Double(sorted.count * batch) / elapsed, Double(sorted.count) / elapsed,
                percentile(0.5), percentile(0.99), stats.failures.withLock { $0 }))
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
