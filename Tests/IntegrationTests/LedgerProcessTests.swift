import AsyncHTTPClient
import Foundation
import Ledger
import NIOCore
import NIOFoundationCompat
import NIOHTTP1
import TDNDNS
import TDNTestSupport
import Testing

/// `tdnd ledger serve` as a process, as an operator runs it, with its real SQLite file: for what
/// only a process shows (SIGKILL, a damaged file at start, connection limits, the commands,
/// PostgreSQL). The API itself is tested in process (LedgerTests).
final class LedgerProcess: LedgerEndpoint, @unchecked Sendable {
    let directory: String
    let process = Process()
    private(set) var port = 0

    private init(sync: String, top: String) {
        directory = makeTemporaryDirectory()
        writeFile(directory + "/tdnd.yaml", LedgerFixture.yaml(sync: sync, top: top))
    }

    /// A ledger process with the fixture's configuration, listening.
    static func start(sync: String = "", top: String = "") async throws -> LedgerProcess {
        let ledger = LedgerProcess(sync: sync, top: top)
        try await ledger.start()
        return ledger
    }

    func start() async throws {
        let log = directory + "/ledger.log"
        _ = FileManager.default.createFile(atPath: log, contents: nil)
        process.executableURL = URL(fileURLWithPath: tdndPath)
        process.arguments = ["ledger", "serve", "--config", directory + "/tdnd.yaml"]
        process.standardError = FileHandle(forWritingAtPath: log)
        process.environment = ["SWIFT_BACKTRACE": "enable=no"]
        try process.run()
        for _ in 0..<200 {
            if let range = self.log.range(of: "ledger API on 127.0.0.1:") {
                port = Int(self.log[range.upperBound...].prefix(while: \.isNumber)) ?? 0
                return
            }
            try await Task.sleep(for: .milliseconds(50))
        }
        throw CancellationError()
    }

    /// Stops the ledger; whether it stopped within 5 s of `signal` (else it is killed).
    @discardableResult
    func stop(kill signal: Int32 = SIGTERM) async -> Bool {
        guard process.isRunning else { return true }
        kill(process.processIdentifier, signal)
        for _ in 0..<100 where process.isRunning { try? await Task.sleep(for: .milliseconds(50)) }
        guard process.isRunning else { return true }
        kill(process.processIdentifier, SIGKILL)
        process.waitUntilExit()
        return false
    }

    deinit {
        if process.isRunning {
            kill(process.processIdentifier, SIGKILL)
            process.waitUntilExit()
        }
        try? FileManager.default.removeItem(atPath: directory)
    }

    var log: String {
        String(decoding: FileManager.default.contents(atPath: directory + "/ledger.log") ?? Data(), as: UTF8.self)
    }

    var store: LedgerStore { get throws { try LedgerStore(directory: directory + "/data") } }

    func request(
        _ method: HTTPMethod, _ path: String, headers: [(String, String)], body: Data
    ) async throws -> (
        status: Int, body: Data
    ) {
        var request = HTTPClientRequest(url: "http://127.0.0.1:\(port)\(path)")
        request.method = method
        for (name, value) in headers { request.headers.add(name: name, value: value) }
        request.body = .bytes(ByteBuffer(data: body))
        let response = try await HTTPClient.shared.execute(request, timeout: .seconds(30))
        return (Int(response.status.code), Data(try await response.body.collect(upTo: 1 << 24).readableBytesView))
    }
}

@Suite("Ledger process", .serialized, .tags(.slow), .timing)
struct LedgerProcessTests {
    static func alive(_ ledger: LedgerProcess) async throws {
        #expect(ledger.process.isRunning, "the ledger died: \(ledger.log.suffix(2000))")
        let health = try await ledger.send(.GET, "/healthz", edge: nil)
        #expect(health.status == 200)
    }

    /// `tdnd ledger report`, `verify` and `allot` against a ledger fed over its API: the same
    /// figures, and values that do not fit are usage errors before anything is sent.
    @Test func ledgerCommandsAgreeWithTheAPI() async throws {
        let ledger = try await LedgerProcess.start()
        let batch = (0..<3).map { LedgerFixture.record("r\($0)") }
        #expect(try await ledger.post(batch).status == 200)
        let report = try await run(
            tdndPath, ["ledger", "report", "--config", ledger.directory + "/tdnd.yaml", "--format", "csv"])
        #expect(
            report.output
                == "tenant,model,site,records,prompt_tokens,completion_tokens,total_tokens,credits\nacme,llama-13b,fra1,3,300,150,450,0.150000\n",
            "\(report)")
        let verify = try await run(tdndPath, ["ledger", "verify", "--config", ledger.directory + "/tdnd.yaml"])
        #expect(verify.status == 0 && verify.output.contains("1 batches, 3 records"), "\(verify)")
        // The same values through `tdnd ledger report` are usage errors, never a trap.
        let config = ledger.directory + "/tdnd.yaml"
        for value in ["nan", "inf", "1e300", "-1"] {
            let report = try await run(tdndPath, ["ledger", "report", "--config", config, "--from", value])
            #expect(report.status == 64, "--from \(value): status \(report.status) \(report.error)")
            #expect(report.error.contains("--from"), "\(report.error)")
        }
        // The CLI checks the same bounds before sending anything.
        let cli = try await run(
            tdndPath,
            [
                "ledger", "allot", "acme", "--config", ledger.directory + "/tdnd.yaml", "--credits", "inf", "--ledger",
                "127.0.0.1:\(ledger.port)",
            ])
        #expect(cli.status == 64, "\(cli)")
        try await LedgerProcessTests.alive(ledger)
    }

    @Test func verifyCatchesTampering() async throws {
        let ledger = try await LedgerProcess.start()
        for batch in 0..<3 {
            #expect(try await ledger.post((0..<4).map { LedgerFixture.record("v\(batch)-\($0)") }).status == 200)
        }
        await ledger.stop()
        let config = ledger.directory + "/tdnd.yaml"
        let database = ledger.directory + "/data/ledger.sqlite"
        #expect(try await run(tdndPath, ["ledger", "verify", "--config", config]).status == 0)
        // An altered record.
        #expect(
            try await sqlite(database, "UPDATE records SET completion_tokens = 5 WHERE id = 'v1-2'")
                .status
                == 0)
        let altered = try await run(tdndPath, ["ledger", "verify", "--config", config])
        #expect(altered.status == 1 && altered.error.contains("(id v1-2) in batch 2: content altered"), "\(altered)")
        // A removed record (its rollup fixed up too, as a careful forger would).
        #expect(
            try await sqlite(
                database,
                "UPDATE records SET completion_tokens = 50 WHERE id = 'v1-2'; DELETE FROM records WHERE id = 'v2-0'"
            ).status == 0)
        let removed = try await run(tdndPath, ["ledger", "verify", "--config", config])
        #expect(removed.status == 1 && removed.error.contains("batch 3: hash does not match its records"), "\(removed)")
        // Reordered batches.
        #expect(
            try await sqlite(
                database,
                """
                INSERT INTO records (id, batch, site, tenant, model, prompt_tokens, completion_tokens, started_at, ended_at, request_id, micro_credits, content_hash)
                  SELECT 'v2-0', 3, site, tenant, model, prompt_tokens, completion_tokens, started_at, ended_at, 'req-v2-0', micro_credits, content_hash FROM records WHERE id = 'v2-1';
                UPDATE batches SET seq = -seq; UPDATE batches SET seq = 4 WHERE seq = -1; UPDATE batches SET seq = -seq WHERE seq < 0;
                """
            ).status == 0)
        let reordered = try await run(tdndPath, ["ledger", "verify", "--config", config])
        #expect(reordered.status == 1 && reordered.error.contains("previous hash does not match"), "\(reordered)")
    }

    @Test func sigkillMidIngestLosesNoAcknowledgedRecord() async throws {
        let ledger = try await LedgerProcess.start()
        let acknowledged = Acknowledged()
        let writers = Task {
            await withTaskGroup(of: Void.self) { group in
                for client in 0..<8 {
                    group.addTask {
                        for batch in 0..<10_000 {
                            let ids = (0..<20).map { "k\(client)-\(batch)-\($0)" }
                            guard let response = try? await ledger.post(ids.map { LedgerFixture.record($0) }) else {
                                return
                            }
                            if response.status == 200 { acknowledged.add(ids) }
                        }
                    }
                }
            }
        }
        // Let it run, then kill it without warning.
        for _ in 0..<100 where acknowledged.count < 2000 { try await Task.sleep(for: .milliseconds(50)) }
        await ledger.stop(kill: SIGKILL)
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
        let postgres = try await PostgresServer()
        defer { postgres.destroy() }
        try #require(
            await postgres.query("SELECT datname FROM pg_database WHERE datname = 'tdn'") == "tdn", "\(postgres.log)")
        func sync(_ node: String) -> String {
            "\n  sync: {host: 127.0.0.1, port: \(postgres.port), user: tdn, database: tdn, node: \(node), batch: 300, interval: 0.1}"
        }
        let first = try await LedgerProcess.start(sync: sync("node1"))
        let second = try await LedgerProcess.start(sync: sync("node2"))
        func ingest(_ ledger: LedgerProcess, _ prefix: String, batches: Range<Int>) async throws {
            for batch in batches {
                let records = (0..<100).map {
                    LedgerFixture.record(
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
            central = Int(await postgres.query("SELECT count(*) FROM ledger_records")) ?? 0
            if central == 3000 { break }
            try await Task.sleep(for: .milliseconds(100))
        }
        #expect(central == 3000, "node1:\n\(first.log)\nnode2:\n\(second.log)")
        #expect(await postgres.query("SELECT count(DISTINCT id) FROM ledger_records") == "3000")
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
        let rows = await postgres.query(
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
            await postgres.query("SELECT node || ':' || seq FROM ledger_sync_cursors ORDER BY node")
                == "node1:2000\nnode2:1000")
        let stopped = [await first.stop(), await second.stop()]
        #expect(stopped == [true, true], "SIGTERM stops a syncing ledger")
    }

    final class Acknowledged: @unchecked Sendable {
        private let lock = NSLock()
        private var set: Set<String> = []
        func add(_ ids: [String]) { lock.withLock { set.formUnion(ids) } }
        var count: Int { lock.withLock { set.count } }
        var ids: Set<String> { lock.withLock { set } }
    }

    @Test func unauthenticatedRequestsAreRefusedBeforeTheirBody() async throws {
        let ledger = try await LedgerProcess.start()
        // Headers announcing 50 MB that never come: the refusal must not wait for them.
        for head in [
            "POST /v1/usage HTTP/1.1\r\nHost: x\r\nContent-Length: 50000000\r\nX-TDN-Edge: nobody\r\n\r\n",
            "POST /v1/usage HTTP/1.1\r\nHost: x\r\nContent-Length: 50000000\r\nX-TDN-Edge: fra1\r\nX-TDN-Timestamp: 1\r\nX-TDN-Signature: 00\r\n\r\n",
            "POST /v1/allotments HTTP/1.1\r\nHost: x\r\nContent-Length: 50000000\r\n\r\n",
        ] {
            let connection = try #require(RawTCP(port: ledger.port))
            connection.send(head)
            let start = monotonicSeconds()
            let (bytes, _) = await connection.receive(timeout: 3, limit: 12)
            #expect(
                String(decoding: bytes, as: UTF8.self).hasPrefix("HTTP/1.1 401"),
                "\(head): \(String(decoding: bytes, as: UTF8.self))")
            #expect(monotonicSeconds() - start < 2)
        }
        try await LedgerProcessTests.alive(ledger)
    }

    @Test func aDamagedDatabaseIsRefusedAtStartAndByVerify() async throws {
        let ledger = try await LedgerProcess.start()
        for batch in 0..<4 {
            let records = (0..<500).map { LedgerFixture.record("d\(batch)-\($0)") }
            #expect(try await ledger.post(records).status == 200)
        }
        #expect(await ledger.stop())
        let database = ledger.directory + "/data/ledger.sqlite"
        let handle = try #require(FileHandle(forUpdatingAtPath: database))
        let size = try handle.seekToEnd()
        #expect(size > 16 * 4096, "the file is large enough to damage its middle")
        // Overwrite one page in the middle of the file (the header stays intact).
        try handle.seek(toOffset: size / 2 / 4096 * 4096)
        handle.write(Data(repeating: 0xA5, count: 4096))
        try handle.close()

        let config = ledger.directory + "/tdnd.yaml"
        let serve = try await run(tdndPath, ["ledger", "serve", "--config", config], timeout: 20)
        #expect(serve.status == 1, "\(serve)")
        #expect(serve.error.contains("damaged"), "\(serve.error)")
        let verify = try await run(tdndPath, ["ledger", "verify", "--config", config])
        #expect(verify.status == 1, "\(verify)")
        #expect(verify.error.contains("damaged"), "\(verify.error)")
    }

    @Test func verifyReportsValuesOfTheWrongTypeInsteadOfTrapping() async throws {
        let ledger = try await LedgerProcess.start()
        #expect(try await ledger.post([LedgerFixture.record("w1"), LedgerFixture.record("w2")]).status == 200)
        let database = ledger.directory + "/data/ledger.sqlite"
        // SQLite accepts text in an INTEGER column; a hand-edited file may hold anything.
        #expect(
            try await sqlite(database, "UPDATE records SET prompt_tokens = 'many' WHERE id = 'w1'")
                .status
                == 0)
        let verify = try await run(tdndPath, ["ledger", "verify", "--config", ledger.directory + "/tdnd.yaml"])
        #expect(verify.status == 1, "\(verify)")
        #expect(verify.error.contains("wrong type"), "\(verify.error)")
    }

    @Test func slowClientsAreCutOffAndConnectionsCapped() async throws {
        let ledger = try await LedgerProcess.start(
            top: "http-header-timeout: 1\nhttp-body-timeout: 2\nhttp-max-connections: 8")
        // Eight clients trickling a request head a byte at a time hold every slot...
        let slow = (0..<8).compactMap { _ in RawTCP(port: ledger.port) }
        #expect(slow.count == 8)
        let start = monotonicSeconds()
        var cut = Set<Int>()
        let head = Array(
            "GET /healthz HTTP/1.1\r\nHost: localhost\r\nX-Padding: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa".utf8)
        // Each has started its head, and the server has taken all eight in, before the ninth comes.
        for connection in slow { connection.send([head[0]]) }
        try await Task.sleep(for: .milliseconds(300))
        var position = 1
        let waiting = try #require(RawTCP(port: ledger.port))
        waiting.send("GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
        let servedEarly = !(await waiting.receive(timeout: 0.5, limit: 1)).bytes.isEmpty
        while monotonicSeconds() - start < 3, cut.count < slow.count {
            for (index, connection) in slow.enumerated() where !cut.contains(index) {
                let sent = connection.send([head[position % head.count]])
                let closed = sent ? (await connection.receive(timeout: 0.01)).closed : true
                if closed {
                    cut.insert(index)
                }
            }
            position += 1
            try await Task.sleep(for: .milliseconds(100))
        }
        // ...until the head deadline closes them, however steadily they send.
        let elapsed = monotonicSeconds() - start
        // The ninth client waited for a slot (the cap), and was served once the slow ones went.
        let (answer, _) = await waiting.receive(timeout: 3, limit: 12)
        let served = monotonicSeconds() - start
        #expect(
            String(decoding: answer, as: UTF8.self).hasPrefix("HTTP/1.1 200"),
            "\(String(decoding: answer, as: UTF8.self))")
        #expect(servedEarly == false, "the ninth connection was served while eight held every slot")
        #expect(served < 3.5)
        #expect(cut.count == 8, "\(cut.count) of 8 slow clients were cut off")
        #expect(elapsed < 2.5, "cut off after \(elapsed) s; the head deadline is 1 s")
        // A head that arrives but whose body trickles is cut off by the body deadline.
        let body = try #require(RawTCP(port: ledger.port))
        body.send(
            "POST /v1/allotments HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer \(LedgerFixture.adminKey)\r\nContent-Length: 1000\r\n\r\n{"
        )
        let bodyStart = monotonicSeconds()
        var bodyClosed = false
        while monotonicSeconds() - bodyStart < 4 {
            let sent = body.send(" ")
            let closed = sent ? (await body.receive(timeout: 0.2)).closed : true
            if closed {
                bodyClosed = true
                break
            }
        }
        #expect(bodyClosed && monotonicSeconds() - bodyStart < 3.5, "a trickled body was not cut off")
        // A normal client is served.
        try await LedgerProcessTests.alive(ledger)
    }
}

/// A PostgreSQL server from Debian's package, in a temporary directory, on a free loopback
/// port (run as the `postgres` user: initdb and postgres refuse root).
final class PostgresServer: @unchecked Sendable {
    let directory: String
    let port: Int
    let bin: String

    init() async throws {
        let versions = (try? FileManager.default.contentsOfDirectory(atPath: "/usr/lib/postgresql")) ?? []
        guard let version = versions.sorted().last else { throw PostgresMissing() }
        bin = "/usr/lib/postgresql/\(version)/bin"
        directory = makeTemporaryDirectory()
        port = freePort()
        _ = try await run("/bin/chown", ["-R", "postgres", directory])
        let initdb = try await run(
            "/usr/sbin/runuser",
            ["-u", "postgres", "--", bin + "/initdb", "-D", directory + "/data", "-A", "trust", "-U", "tdn"])
        guard initdb.status == 0 else { throw PostgresMissing(detail: initdb.error) }
        try start()
        _ = await query("CREATE DATABASE tdn", database: "postgres")
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
    func query(_ sql: String, database: String = "tdn") async -> String {
        let result = try? await run(
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
