import AsyncHTTPClient
import Foundation
import LedgerSync
import NIOCore
import NIOFoundationCompat
import NIOHTTP1
import TDNTestSupport
import Testing

/// `tdnd ledger serve` as a process, driven over real HTTP, with its real SQLite file.
@Suite("Token ledger", .serialized)
struct LedgerTests {
    static let edgeKey = "fra1-secret-key-0123456789"
    static let otherKey = "par1-secret-key-0123456789"
    static let adminKey = "ledger-admin-key-0123456789"

    final class Ledger: @unchecked Sendable {
        let directory: String
        let process = Process()
        var port = 0
        var http: HTTPClient { HTTPClient.shared }

        init(sync: String = "", top: String = "") throws {
            directory = makeTemporaryDirectory()
            writeFile(
                directory + "/tdnd.yaml",
                """
                \(top)
                ledger:\(sync)
                  listen: 127.0.0.1:0
                  data: data
                  clock-skew: 60
                  admin-key: \(LedgerTests.adminKey)
                  edges: {fra1: \(LedgerTests.edgeKey), par1: \(LedgerTests.otherKey)}
                  tenants: [acme, globex]
                  rates:
                    llama-13b: {prompt: 0.2, completion: 0.6}
                    llama-70b: {prompt: 1, completion: 3}
                """)
            try start()
        }

        func start() throws {
            let log = directory + "/ledger.log"
            _ = FileManager.default.createFile(atPath: log, contents: nil)
            process.executableURL = URL(fileURLWithPath: tdndPath)
            process.arguments = ["ledger", "serve", "--config", directory + "/tdnd.yaml"]
            process.standardError = FileHandle(forWritingAtPath: log)
            process.environment = ["SWIFT_BACKTRACE": "enable=no"]
            try process.run()
            for _ in 0..<200 {
                let text = String(decoding: FileManager.default.contents(atPath: log) ?? Data(), as: UTF8.self)
                if let range = text.range(of: "ledger API on 127.0.0.1:") {
                    port = Int(text[range.upperBound...].prefix(while: \.isNumber)) ?? 0
                    return
                }
                usleep(50_000)
            }
            throw CancellationError()
        }

        /// Stops the ledger; whether it stopped within 5 s of `signal` (else it is killed).
        @discardableResult
        func stop(kill signal: Int32 = SIGTERM) -> Bool {
            guard process.isRunning else { return true }
            kill(process.processIdentifier, signal)
            for _ in 0..<100 where process.isRunning { usleep(50_000) }
            guard process.isRunning else { return true }
            kill(process.processIdentifier, SIGKILL)
            process.waitUntilExit()
            return false
        }

        deinit {
            stop()
            try? FileManager.default.removeItem(atPath: directory)
        }

        var log: String {
            String(decoding: FileManager.default.contents(atPath: directory + "/ledger.log") ?? Data(), as: UTF8.self)
        }

        var store: LedgerStore { get throws { try LedgerStore(directory: directory + "/data") } }

        /// A signed request; `timestamp` and `key` can be overridden to test the checks.
        func send(
            _ method: HTTPMethod, _ path: String, body: Data = Data(), edge: String? = "fra1",
            key: String = LedgerTests.edgeKey,
            timestamp: Double = Date().timeIntervalSince1970, bearer: String? = nil, signedTarget: String? = nil
        ) async throws -> (status: Int, json: [String: Any]) {
            var request = HTTPClientRequest(url: "http://127.0.0.1:\(port)\(path)")
            request.method = method
            let stamp = String(Int(timestamp))
            if let edge {
                request.headers.add(name: "X-TDN-Edge", value: edge)
                request.headers.add(name: "X-TDN-Timestamp", value: stamp)
                let signature = RequestSignature.sign(
                    key: key, method: method.rawValue, target: signedTarget ?? path, timestamp: stamp, body: body)
                request.headers.add(name: "X-TDN-Signature", value: signature)
            }
            if let bearer { request.headers.add(name: "Authorization", value: "Bearer \(bearer)") }
            request.body = .bytes(ByteBuffer(data: body))
            let response = try await http.execute(request, timeout: .seconds(30))
            let data = Data(try await response.body.collect(upTo: 1 << 24).readableBytesView)
            let json =
                (try? JSONSerialization.jsonObject(with: data)) as? [String: Any] ?? [
                    "raw": String(decoding: data, as: UTF8.self)
                ]
            return (Int(response.status.code), json)
        }

        func post(
            _ records: [UsageRecord], edge: String = "fra1", key: String = LedgerTests.edgeKey,
            timestamp: Double = Date().timeIntervalSince1970
        )
            async throws -> (status: Int, json: [String: Any])
        {
            try await send(
                .POST, "/v1/usage", body: try JSONEncoder().encode(UsageBatch(records: records)), edge: edge, key: key,
                timestamp: timestamp)
        }

        func recordCount() throws -> Int { try store.verify().records }
    }

    static func record(
        _ id: String, site: String = "fra1", tenant: String = "acme", model: String = "llama-13b", prompt: Int = 100,
        completion: Int = 50
    )
        -> UsageRecord
    {
        UsageRecord(
            id: id, site: site, tenant: tenant, model: model, promptTokens: prompt, completionTokens: completion,
            startedAt: 1_795_370_000, endedAt: 1_795_370_002.5, requestID: "req-\(id)")
    }

    @Test func goodBatchIsStoredOnceAndCounted() async throws {
        let ledger = try Ledger()
        let batch = (0..<3).map { Self.record("r\($0)") }
        let first = try await ledger.post(batch)
        #expect(
            first.status == 200 && first.json["stored"] as? Int == 3 && first.json["duplicates"] as? Int == 0,
            "\(first)")
        // A retry of the same batch is acknowledged again and counted once.
        let retry = try await ledger.post(batch)
        #expect(retry.status == 200 && retry.json["stored"] as? Int == 0 && retry.json["duplicates"] as? Int == 3)
        // The same id with other content: 409, and nothing of that batch is stored.
        var changed = batch
        changed[1].completionTokens = 999
        let conflict = try await ledger.post([Self.record("r9")] + changed)
        #expect(conflict.status == 409, "\(conflict)")
        #expect((conflict.json["records"] as? [[String: Any]])?.first?["id"] as? String == "r1")
        #expect(try ledger.recordCount() == 3, "r9 was not stored either")

        // Rollups and credits: 3 × (100 prompt × 0.2 + 50 completion × 0.6) / 1000 = 0.15.
        let summary = try await ledger.send(.GET, "/v1/usage/summary?tenant=acme&group-by=tenant,model,site")
        let rows = try #require(summary.json["rows"] as? [[String: Any]], "\(summary)")
        #expect(rows.count == 1)
        #expect(
            rows.first?["prompt_tokens"] as? Int == 300 && rows.first?["completion_tokens"] as? Int == 150
                && rows.first?["records"] as? Int == 3)
        #expect(abs((rows.first?["credits"] as? Double ?? 0) - 0.15) < 1e-9)
        let hourly = try await ledger.send(.GET, "/v1/usage/summary?group-by=hour&from=2026-11-22&to=2026-11-24")
        #expect(
            (hourly.json["rows"] as? [[String: Any]])?.first?["period"] as? Int == 1_795_370_000 / 3600 * 3600,
            "\(hourly)")

        // Allotments need the admin key; the balance is allotted minus consumed.
        let allotment = try JSONSerialization.data(withJSONObject: ["tenant": "acme", "tokens": 1000, "credits": 1.5])
        #expect(try await ledger.send(.POST, "/v1/allotments", body: allotment, edge: "fra1").status == 401)
        #expect(
            try await ledger.send(.POST, "/v1/allotments", body: allotment, edge: nil, bearer: Self.adminKey).status
                == 200)
        let balance = try await ledger.send(.GET, "/v1/balance/acme")
        #expect(balance.json["balance_tokens"] as? Int == 1000 - 450, "\(balance)")
        #expect(abs((balance.json["balance_credits"] as? Double ?? 0) - 1.35) < 1e-9)
        #expect(
            try await ledger.send(.GET, "/v1/balance/acme", edge: nil).status == 401,
            "every endpoint but /healthz needs authentication")
        #expect(try await ledger.send(.GET, "/v1/balance/nobody").status == 404)

        // The CLI reports the same, and verify passes.
        let report = try run(
            tdndPath, ["ledger", "report", "--config", ledger.directory + "/tdnd.yaml", "--format", "csv"])
        #expect(
            report.output
                == "tenant,model,site,records,prompt_tokens,completion_tokens,total_tokens,credits\nacme,llama-13b,fra1,3,300,150,450,0.150000\n",
            "\(report)")
        let verify = try run(tdndPath, ["ledger", "verify", "--config", ledger.directory + "/tdnd.yaml"])
        #expect(verify.status == 0 && verify.output.contains("1 batches, 3 records"), "\(verify)")
    }

    @Test func badBatchesStoreNothing() async throws {
        let ledger = try Ledger()
        let good = Self.record("ok-1")
        var negative = Self.record("neg")
        negative.promptTokens = -1
        var backwards = Self.record("back")
        backwards.endedAt = backwards.startedAt - 1
        let cases: [(String, [UsageRecord], String)] = [
            ("unknown tenant", [good, Self.record("t", tenant: "initech")], "unknown tenant 'initech'"),
            ("unknown model", [good, Self.record("m", model: "gpt-9")], "unknown model 'gpt-9' (no rate)"),
            ("another site", [good, Self.record("s", site: "par1")], "site 'par1' is not the signing edge 'fra1'"),
            ("negative tokens", [good, negative], "token counts must be 0 to 100,000,000"),
            (
                "time backwards", [good, backwards],
                "started_at and ended_at must be Unix seconds with started_at ≤ ended_at (within a day)"
            ),
        ]
        for (label, records, reason) in cases {
            let response = try await ledger.post(records)
            #expect(response.status == 400, "\(label)")
            let problems = response.json["records"] as? [[String: Any]] ?? []
            #expect(
                problems.count == 1 && problems.first?["index"] as? Int == 1
                    && problems.first?["reason"] as? String == reason, "\(label): \(response)")
        }
        // Not JSON, and the wrong shape.
        let garbage = try await ledger.send(.POST, "/v1/usage", body: Data("{\"records\": [{\"id\": 1}]".utf8))
        #expect(garbage.status == 400)
        let shape = try await ledger.send(.POST, "/v1/usage", body: Data("{\"records\": [{\"id\": \"x\"}]}".utf8))
        #expect(shape.status == 400 && (shape.json["error"] as? String)?.contains("missing") == true, "\(shape)")

        // Signatures: wrong key, unknown edge, stale or future timestamp.
        #expect(try await ledger.post([good], key: Self.otherKey).status == 401)
        #expect(try await ledger.post([good], edge: "mars1").status == 401)
        #expect(
            try await ledger.post([good], timestamp: Date().timeIntervalSince1970 - 120).status == 401,
            "older than the 60 s skew: a replay")
        #expect(try await ledger.post([good], timestamp: Date().timeIntervalSince1970 + 120).status == 401)
        // A body changed after signing.
        let body = try JSONEncoder().encode(UsageBatch(records: [good]))
        var request = HTTPClientRequest(url: "http://127.0.0.1:\(ledger.port)/v1/usage")
        request.method = .POST
        let stamp = String(Int(Date().timeIntervalSince1970))
        request.headers.add(name: "X-TDN-Edge", value: "fra1")
        request.headers.add(name: "X-TDN-Timestamp", value: stamp)
        request.headers.add(
            name: "X-TDN-Signature",
            value: RequestSignature.sign(
                key: Self.edgeKey, method: "POST", target: "/v1/usage", timestamp: stamp, body: body))
        var tampered = body
        tampered.append(contentsOf: Array(" ".utf8))
        request.body = .bytes(ByteBuffer(data: tampered))
        #expect(try await ledger.http.execute(request, timeout: .seconds(10)).status.code == 401)

        #expect(try ledger.recordCount() == 0, "nothing of any refused batch was stored")
        #expect(try await ledger.post([good]).status == 200)
        #expect(try ledger.recordCount() == 1)
    }

    @Test func concurrentIngestGivesExactTotals() async throws {
        let ledger = try Ledger()
        let clients = 16
        let batches = 10
        let size = 50
        try await withThrowingTaskGroup(of: Void.self) { group in
            for client in 0..<clients {
                group.addTask {
                    for batch in 0..<batches {
                        let records = (0..<size).map {
                            Self.record(
                                "c\(client)-b\(batch)-\($0)", tenant: client % 2 == 0 ? "acme" : "globex", prompt: 10,
                                completion: 1)
                        }
                        let response = try await ledger.post(records)
                        #expect(response.status == 200 && response.json["stored"] as? Int == size)
                        // Every other batch is retried: counted once.
                        if batch % 2 == 0 { #expect(try await ledger.post(records).json["duplicates"] as? Int == size) }
                    }
                }
            }
            try await group.waitForAll()
        }
        let total = clients * batches * size
        let summary = try await ledger.send(.GET, "/v1/usage/summary?group-by=tenant")
        let rows = summary.json["rows"] as? [[String: Any]] ?? []
        #expect(rows.map { $0["records"] as? Int ?? 0 } == [total / 2, total / 2], "\(summary)")
        #expect(rows.map { $0["prompt_tokens"] as? Int ?? 0 } == [total / 2 * 10, total / 2 * 10])
        let balance = try await ledger.send(.GET, "/v1/balance/globex")
        #expect(balance.json["consumed_tokens"] as? Int == total / 2 * 11)
        let verified = try ledger.store.verify()
        #expect(verified.records == total && verified.problems.isEmpty, "\(verified.problems)")
    }

    @Test func verifyCatchesTampering() async throws {
        let ledger = try Ledger()
        for batch in 0..<3 {
            #expect(try await ledger.post((0..<4).map { Self.record("v\(batch)-\($0)") }).status == 200)
        }
        ledger.stop()
        let config = ledger.directory + "/tdnd.yaml"
        let database = ledger.directory + "/data/ledger.sqlite"
        #expect(try run(tdndPath, ["ledger", "verify", "--config", config]).status == 0)
        // An altered record.
        #expect(
            try run("/usr/bin/sqlite3", [database, "UPDATE records SET completion_tokens = 5 WHERE id = 'v1-2'"]).status
                == 0)
        let altered = try run(tdndPath, ["ledger", "verify", "--config", config])
        #expect(altered.status == 1 && altered.error.contains("(id v1-2) in batch 2: content altered"), "\(altered)")
        // A removed record (its rollup fixed up too, as a careful forger would).
        #expect(
            try run(
                "/usr/bin/sqlite3",
                [
                    database,
                    "UPDATE records SET completion_tokens = 50 WHERE id = 'v1-2'; DELETE FROM records WHERE id = 'v2-0'",
                ]
            ).status == 0)
        let removed = try run(tdndPath, ["ledger", "verify", "--config", config])
        #expect(removed.status == 1 && removed.error.contains("batch 3: hash does not match its records"), "\(removed)")
        // Reordered batches.
        #expect(
            try run(
                "/usr/bin/sqlite3",
                [
                    database,
                    """
                    INSERT INTO records (id, batch, site, tenant, model, prompt_tokens, completion_tokens, started_at, ended_at, request_id, micro_credits, content_hash)
                      SELECT 'v2-0', 3, site, tenant, model, prompt_tokens, completion_tokens, started_at, ended_at, 'req-v2-0', micro_credits, content_hash FROM records WHERE id = 'v2-1';
                    UPDATE batches SET seq = -seq; UPDATE batches SET seq = 4 WHERE seq = -1; UPDATE batches SET seq = -seq WHERE seq < 0;
                    """,
                ]
            ).status == 0)
        let reordered = try run(tdndPath, ["ledger", "verify", "--config", config])
        #expect(reordered.status == 1 && reordered.error.contains("previous hash does not match"), "\(reordered)")
    }

    @Test func sigkillMidIngestLosesNoAcknowledgedRecord() async throws {
        let ledger = try Ledger()
        let acknowledged = Acknowledged()
        let writers = Task {
            await withTaskGroup(of: Void.self) { group in
                for client in 0..<8 {
                    group.addTask {
                        for batch in 0..<10_000 {
                            let ids = (0..<20).map { "k\(client)-\(batch)-\($0)" }
                            guard let response = try? await ledger.post(ids.map { Self.record($0) }) else { return }
                            if response.status == 200 { acknowledged.add(ids) }
                        }
                    }
                }
            }
        }
        // Let it run, then kill it without warning.
        for _ in 0..<100 where acknowledged.count < 2000 { try await Task.sleep(for: .milliseconds(50)) }
        ledger.stop(kill: SIGKILL)
        await writers.value
        let acked = acknowledged.ids
        #expect(acked.count >= 1000, "ingest was under way: \(acked.count) acknowledged")
        let store = try ledger.store
        let verified = try store.verify()
        #expect(verified.problems.isEmpty, "\(verified.problems)")
        let stored = try Set(store.recordIDs())
        #expect(acked.isSubset(of: stored), "\(acked.subtracting(stored).count) acknowledged records lost")
        // Nothing partial: every stored batch of 20 is whole.
        let perBatch = Dictionary(grouping: stored, by: { $0.split(separator: "-").dropLast().joined(separator: "-") })
            .mapValues(\.count)
        #expect(perBatch.values.allSatisfy { $0 == 20 }, "a batch was stored in part")
        #expect(stored.count - acked.count <= 8 * 20, "at most the batches in flight were stored unacknowledged")
    }

    @Test func syncToPostgreSQLIsExactlyOnceAcrossARestart() async throws {
        let postgres = try PostgresServer()
        defer { postgres.destroy() }
        try #require(
            postgres.query("SELECT datname FROM pg_database WHERE datname = 'tdn'") == "tdn", "\(postgres.log)")
        func sync(_ node: String) -> String {
            "\n  sync: {host: 127.0.0.1, port: \(postgres.port), user: tdn, database: tdn, node: \(node), batch: 300, interval: 0.1}"
        }
        let first = try Ledger(sync: sync("node1"))
        let second = try Ledger(sync: sync("node2"))
        func ingest(_ ledger: Ledger, _ prefix: String, batches: Range<Int>) async throws {
            for batch in batches {
                let records = (0..<100).map {
                    Self.record(
                        "\(prefix)-\(batch)-\($0)", tenant: $0 % 3 == 0 ? "globex" : "acme", prompt: $0,
                        completion: 2 * $0)
                }
                #expect(try await ledger.post(records).status == 200)
            }
        }
        try await ingest(first, "n1", batches: 0..<10)
        try await ingest(second, "n2", batches: 0..<5)
        // The connection is cut in the middle: PostgreSQL restarts while the edges go on.
        postgres.stop()
        try await ingest(first, "n1", batches: 10..<20)
        try postgres.start()
        try await ingest(second, "n2", batches: 5..<10)
        // Everything arrives, once.
        var central = 0
        for _ in 0..<900 {
            central = Int(postgres.query("SELECT count(*) FROM ledger_records")) ?? 0
            if central == 3000 { break }
            try await Task.sleep(for: .milliseconds(100))
        }
        #expect(central == 3000, "node1:\n\(first.log)\nnode2:\n\(second.log)")
        #expect(postgres.query("SELECT count(DISTINCT id) FROM ledger_records") == "3000")
        // The central rollups equal the sum of the nodes'.
        let local = try [first.store, second.store].map {
            try $0.summary(
                {
                    var query = LedgerStore.SummaryQuery()
                    query.groupBy = ["tenant", "model", "site", "hour"]
                    return query
                }())
        }
        var expected: [String: (Int64, Int64, Int64, Int64)] = [:]
        for row in local.joined() {
            let key = "\(row.tenant!)|\(row.model!)|\(row.site!)|\(row.period!)"
            let old = expected[key] ?? (0, 0, 0, 0)
            expected[key] = (
                old.0 + row.records, old.1 + row.promptTokens, old.2 + row.completionTokens,
                old.3 + Int64((row.credits * 1e6).rounded())
            )
        }
        let rows = postgres.query(
            "SELECT tenant || '|' || model || '|' || site || '|' || hour, records, prompt_tokens, completion_tokens, micro_credits FROM ledger_usage_hourly ORDER BY 1"
        )
        var actual: [String: (Int64, Int64, Int64, Int64)] = [:]
        for line in rows.split(separator: "\n") {
            let cells = line.split(separator: "|", omittingEmptySubsequences: false).map(String.init)
            guard cells.count == 8 else { continue }
            actual[cells[0...3].joined(separator: "|")] = (
                Int64(cells[4])!, Int64(cells[5])!, Int64(cells[6])!, Int64(cells[7])!
            )
        }
        #expect(
            actual.count == expected.count
                && actual.allSatisfy { key, value in expected[key].map { $0 == value } ?? false },
            "\(actual) vs \(expected)")
        #expect(
            postgres.query("SELECT node || ':' || seq FROM ledger_sync_cursors ORDER BY node")
                == "node1:2000\nnode2:1000")
        #expect(first.stop() && second.stop(), "SIGTERM stops a syncing ledger")
    }

    final class Acknowledged: @unchecked Sendable {
        private let lock = NSLock()
        private var set: Set<String> = []
        func add(_ ids: [String]) { lock.withLock { set.formUnion(ids) } }
        var count: Int { lock.withLock { set.count } }
        var ids: Set<String> { lock.withLock { set } }
    }
}

/// A PostgreSQL server from Debian's package, in a temporary directory, on a free loopback
/// port (run as the `postgres` user: initdb and postgres refuse root).
final class PostgresServer: @unchecked Sendable {
    let directory: String
    let port: Int
    let bin: String

    init() throws {
        let versions = (try? FileManager.default.contentsOfDirectory(atPath: "/usr/lib/postgresql")) ?? []
        guard let version = versions.sorted().last else { throw PostgresMissing() }
        bin = "/usr/lib/postgresql/\(version)/bin"
        directory = makeTemporaryDirectory()
        port = freePort()
        _ = try run("/bin/chown", ["-R", "postgres", directory])
        let initdb = try run(
            "/usr/sbin/runuser",
            ["-u", "postgres", "--", bin + "/initdb", "-D", directory + "/data", "-A", "trust", "-U", "tdn"])
        guard initdb.status == 0 else { throw PostgresMissing(detail: initdb.error) }
        try start()
        _ = query("CREATE DATABASE tdn", database: "postgres")
    }

    // pg_ctl leaves the server running with the descriptors it inherited, so Foundation's
    // Process would wait for it too: plain system(3) waits for pg_ctl alone.
    func start() throws {
        let status = system(
            "/usr/sbin/runuser -u postgres -- \(bin)/pg_ctl -D \(directory)/data -w -l \(directory)/log "
                + "-o '-p \(port) -k \(directory) -c listen_addresses=127.0.0.1' start >/dev/null 2>&1 </dev/null")
        guard status == 0 else { throw PostgresMissing(detail: "pg_ctl start failed (\(status))") }
    }

    func stop() {
        _ = system(
            "/usr/sbin/runuser -u postgres -- \(bin)/pg_ctl -D \(directory)/data -w -m fast stop >/dev/null 2>&1 </dev/null"
        )
    }

    var log: String {
        String(decoding: FileManager.default.contents(atPath: directory + "/log") ?? Data(), as: UTF8.self)
    }

    func destroy() {
        stop()
        try? FileManager.default.removeItem(atPath: directory)
    }

    /// psql's unaligned output of one statement.
    func query(_ sql: String, database: String = "tdn") -> String {
        let result = try? run(
            "/usr/bin/psql", ["-h", "127.0.0.1", "-p", String(port), "-U", "tdn", "-d", database, "-At", "-c", sql])
        return result?.output.trimmingCharacters(in: .whitespacesAndNewlines) ?? ""
    }

    struct PostgresMissing: Error {
        var detail = "Debian's postgresql package is not installed (make test installs it)"
    }
}

func freePort() -> Int {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    defer { close(fd) }
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_addr.s_addr = inet_addr("127.0.0.1")
    _ = withUnsafePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
    }
    var length = socklen_t(MemoryLayout<sockaddr_in>.size)
    _ = withUnsafeMutablePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) }
    }
    return Int(UInt16(bigEndian: address.sin_port))
}
