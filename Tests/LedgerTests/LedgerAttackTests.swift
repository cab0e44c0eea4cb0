import AsyncHTTPClient
import Foundation
import LedgerSync
import NIOCore
import NIOFoundationCompat
import NIOHTTP1
import TDNDNS
import TDNTestSupport
import Testing

/// The ledger attacked as an edge (or anyone who can reach its port) would: values that do
/// not fit, replayed signatures, hostile strings and JSON, slow clients, a damaged file. Each
/// must get a 4xx (or be cut off) while the process lives on and stores nothing partial.
@Suite("Token ledger under attack", .serialized)
struct LedgerAttackTests {
    typealias Ledger = LedgerTests.Ledger

    static func alive(_ ledger: Ledger) async throws {
        #expect(ledger.process.isRunning, "the ledger died: \(ledger.log.suffix(2000))")
        let health = try await ledger.send(.GET, "/healthz", edge: nil)
        #expect(health.status == 200)
    }

    @Test func summaryParametersThatDoNotFitAre400() async throws {
        let ledger = try Ledger()
        let values = [
            "nan", "NaN", "inf", "-inf", "infinity", "1e300", "-1e300", "1e19", "9223372036854775808",
            "-9223372036854775809",
            "-1", "253402300800", "", "1.5e", "0x10", "2026-13-45", "%00", "9%00", String(repeating: "9", count: 5000),
        ]
        for name in ["from", "to"] {
            for value in values {
                let response = try await ledger.send(.GET, "/v1/usage/summary?\(name)=\(value)")
                #expect(response.status == 400, "\(name)=\(value.prefix(40)): \(response)")
            }
        }
        // In range, the same parameters work.
        let ok = try await ledger.send(.GET, "/v1/usage/summary?from=0&to=253402300799&group-by=tenant,day")
        #expect(ok.status == 200, "\(ok)")
        // Unknown, repeated and control-character parameters are refused too.
        for query in ["tennant=acme", "tenant=acme&tenant=globex", "tenant=ac%00me", "site=%0Afra1"] {
            let response = try await ledger.send(.GET, "/v1/usage/summary?\(query)")
            #expect(response.status == 400, "\(query): \(response)")
        }
        try await Self.alive(ledger)

        // The same values through `tdnd ledger report` are usage errors, never a trap.
        let config = ledger.directory + "/tdnd.yaml"
        for value in ["nan", "inf", "1e300", "-1"] {
            let report = try run(tdndPath, ["ledger", "report", "--config", config, "--from", value])
            #expect(report.status == 64, "--from \(value): status \(report.status) \(report.error)")
            #expect(report.error.contains("--from"), "\(report.error)")
        }
    }

    @Test func extremeAllotmentsAreRefusedAndBalancesStayReadable() async throws {
        let ledger = try Ledger()
        func allot(_ json: String) async throws -> (status: Int, json: [String: Any]) {
            try await ledger.send(
                .POST, "/v1/allotments", body: Data(json.utf8), edge: nil, bearer: LedgerTests.adminKey)
        }
        for body in [
            #"{"tenant":"acme","tokens":9223372036854775807}"#, #"{"tenant":"acme","tokens":-9223372036854775808}"#,
            #"{"tenant":"acme","tokens":9223372036854775808}"#, #"{"tenant":"acme","tokens":1000000000000001}"#,
            #"{"tenant":"acme","tokens":1.5}"#, #"{"tenant":"acme","tokens":1e3}"#,
            #"{"tenant":"acme","credits":1e300}"#,
            #"{"tenant":"acme","credits":1e400}"#, #"{"tenant":"acme","credits":-1e10}"#,
            #"{"tenant":"acme","tokens":"100"}"#,
        ] {
            let response = try await allot(body)
            #expect(response.status == 400, "\(body): \(response)")
        }
        let good = try await allot(#"{"tenant":"acme","tokens":1000000000000000,"credits":1000000000}"#)
        #expect(good.status == 200 && good.json["allotted_tokens"] as? Int == 1_000_000_000_000_000, "\(good)")
        let correction = try await allot(
            #"{"tenant":"acme","tokens":-1000000000000000,"credits":-1000000000,"note":"correction"}"#)
        #expect(correction.status == 200 && correction.json["allotted_tokens"] as? Int == 0, "\(correction)")

        // A tenant already near the bound: one more allotment would pass it, so it is refused
        // and the balance stays readable.
        let database = ledger.directory + "/data/ledger.sqlite"
        let seeded = try run(
            "/usr/bin/sqlite3",
            [database, "UPDATE tenant_totals SET allotted_tokens = 3999999999999999999 WHERE tenant = 'acme'"])
        #expect(seeded.status == 0, "\(seeded.error)")
        let over = try await allot(#"{"tenant":"acme","tokens":1000000000000000}"#)
        #expect(over.status == 400, "\(over)")
        #expect((over.json["error"] as? String ?? "").contains("bound"), "\(over)")
        let balance = try await ledger.send(.GET, "/v1/balance/acme")
        #expect(
            balance.status == 200 && balance.json["allotted_tokens"] as? Int == 3_999_999_999_999_999_999, "\(balance)")

        // The CLI checks the same bounds before sending anything.
        let cli = try run(
            tdndPath,
            [
                "ledger", "allot", "acme", "--config", ledger.directory + "/tdnd.yaml", "--credits", "inf", "--ledger",
                "127.0.0.1:\(ledger.port)",
            ])
        #expect(cli.status == 64, "\(cli)")
        try await Self.alive(ledger)
    }

    @Test func signedReadsCoverTheQueryString() async throws {
        let ledger = try Ledger()
        #expect(try await ledger.post([LedgerTests.record("q1")]).status == 200)
        let target = "/v1/usage/summary?tenant=acme"
        let signed = try await ledger.send(.GET, target)
        #expect(signed.status == 200, "\(signed)")
        // The same signature replayed with other parameters: refused.
        let replayed = try await ledger.send(.GET, "/v1/usage/summary?tenant=globex", signedTarget: target)
        #expect(replayed.status == 401, "\(replayed)")
        // A signature over the path alone (without its query) no longer passes.
        let pathOnly = try await ledger.send(.GET, target, signedTarget: "/v1/usage/summary")
        #expect(pathOnly.status == 401, "\(pathOnly)")
        let balance = try await ledger.send(.GET, "/v1/balance/acme", signedTarget: "/v1/balance/globex")
        #expect(balance.status == 401, "\(balance)")
    }

    @Test func controlCharactersAreRefusedAndIDsCompareByBytes() async throws {
        let ledger = try Ledger()
        var nul = LedgerTests.record("a\u{0}b")
        let refused = try await ledger.post([nul])
        #expect(refused.status == 400, "\(refused)")
        #expect("\(refused.json)".contains("control character"), "\(refused)")
        nul = LedgerTests.record("ok-1")
        nul.requestID = "req\u{0}x"
        #expect(try await ledger.post([nul]).status == 400)
        var tab = LedgerTests.record("ok-2")
        tab.model = "llama-13b\t"
        #expect(try await ledger.post([tab]).status == 400)
        #expect(try ledger.recordCount() == 0)

        // Two canonically equal spellings are two ids, as they are to SQLite.
        let composed = LedgerTests.record("caf\u{E9}")
        let decomposed = LedgerTests.record("cafe\u{301}")
        #expect(composed.id == decomposed.id, "Swift's String == is canonical equivalence")
        let both = try await ledger.post([composed, decomposed])
        #expect(both.status == 200 && both.json["stored"] as? Int == 2, "\(both)")
        let again = try await ledger.post([decomposed])
        #expect(again.status == 200 && again.json["duplicates"] as? Int == 1, "\(again)")
        #expect(Set(try ledger.store.recordIDs().map { Array($0.utf8) }).count == 2)
        let verify = try run(tdndPath, ["ledger", "verify", "--config", ledger.directory + "/tdnd.yaml"])
        #expect(verify.status == 0, "\(verify)")
    }

    @Test func jsonIsDecodedStrictly() async throws {
        let ledger = try Ledger()
        let record =
            #""id":"j1","site":"fra1","tenant":"acme","model":"llama-13b","started_at":1795370000,"ended_at":1795370001"#
        let cases: [(String, String)] = [
            (
                #"{"records":[{\#(record),"prompt_tokens":1,"completion_tokens":2,"prompt_tokens":999}]}"#,
                "duplicate key"
            ),
            (#"{"records":[{\#(record),"prompt_tokens":1,"completion_tokens":2}],"records":[]}"#, "duplicate key"),
            (#"{"records":[{\#(record),"prompt_tokens":1,"completion_tokens":2,"cost":5}]}"#, "unknown field"),
            (#"{"records":[{\#(record),"prompt_tokens":1,"completion_tokens":2}],"extra":true}"#, "unknown field"),
            (#"{"records":[{\#(record),"prompt_tokens":1.0,"completion_tokens":2}]}"#, "integer"),
            (#"{"records":[{\#(record),"prompt_tokens":1,"completion_tokens":2}]} x"#, "after the JSON value"),
            (#"{"records":[{\#(record),"prompt_tokens":1,"completion_tokens":2}]"#, "end of input"),
            (#"{"records":[{\#(record),"prompt_tokens":1}]}"#, "missing field completion_tokens"),
        ]
        for (body, reason) in cases {
            let response = try await ledger.send(.POST, "/v1/usage", body: Data(body.utf8))
            #expect(response.status == 400, "\(body): \(response)")
            #expect((response.json["error"] as? String ?? "").contains(reason), "\(body): \(response)")
        }
        // A megabyte of tenant name is refused without being echoed back.
        var huge = LedgerTests.record("j2")
        huge.tenant = String(repeating: "x", count: 1 << 20)
        let big = try await ledger.send(.POST, "/v1/usage", body: try JSONEncoder().encode(UsageBatch(records: [huge])))
        #expect(big.status == 400)
        #expect("\(big.json)".utf8.count < 4096, "the error echoed \("\(big.json)".utf8.count) bytes")
        let allotment = try await ledger.send(
            .POST, "/v1/allotments", body: Data(#"{"tenant":"acme","tokens":5,"tokens":500}"#.utf8), edge: nil,
            bearer: LedgerTests.adminKey)
        #expect(allotment.status == 400, "\(allotment)")
        #expect(try ledger.recordCount() == 0)
    }

    @Test func unauthenticatedRequestsAreRefusedBeforeTheirBody() async throws {
        let ledger = try Ledger()
        // Headers announcing 50 MB that never come: the refusal must not wait for them.
        for head in [
            "POST /v1/usage HTTP/1.1\r\nHost: x\r\nContent-Length: 50000000\r\nX-TDN-Edge: nobody\r\n\r\n",
            "POST /v1/usage HTTP/1.1\r\nHost: x\r\nContent-Length: 50000000\r\nX-TDN-Edge: fra1\r\nX-TDN-Timestamp: 1\r\nX-TDN-Signature: 00\r\n\r\n",
            "POST /v1/allotments HTTP/1.1\r\nHost: x\r\nContent-Length: 50000000\r\n\r\n",
        ] {
            let connection = try #require(RawTCP(port: ledger.port))
            connection.send(head)
            let start = monotonicSeconds()
            let (bytes, _) = connection.receive(timeout: 3, limit: 12)
            #expect(
                String(decoding: bytes, as: UTF8.self).hasPrefix("HTTP/1.1 401"),
                "\(head): \(String(decoding: bytes, as: UTF8.self))")
            #expect(monotonicSeconds() - start < 2)
        }
        try await Self.alive(ledger)
    }

    /// Random and extreme values in every endpoint's query parameters and JSON fields: a 2xx
    /// or 4xx every time, and a live process afterwards. Seeded: `TDN_TEST_SEED=N` replays.
    @Test func randomAndExtremeInputIsAnsweredAndSurvived() async throws {
        let ledger = try Ledger()
        let seed =
            ProcessInfo.processInfo.environment["TDN_TEST_SEED"].flatMap(UInt64.init)
            ?? UInt64.random(in: 1...UInt64.max >> 1)
        var random = SeededRandom(state: seed)
        let scalars = [
            "0", "-0", "1", "-1", "1e400", "-1e400", "1e308", "9223372036854775807", "9223372036854775808",
            "-9223372036854775809",
            "100000001", "0.0000001", "1.5", "253402300800", "1795370001", "null", "true", "[]", "{}", #""""#,
            #""\u0000""#,
            #""\n""#, #""\ud800""#, #""caf\u00e9""#, #""acme""#, #""fra1""#, #""llama-13b""#,
            "\"\(String(repeating: "z", count: 3000))\"",
            #"[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]"#, #"{"a":1,"a":2}"#,
        ]
        let fields = [
            "id", "site", "tenant", "model", "prompt_tokens", "completion_tokens", "started_at", "ended_at",
            "request_id", "bogus",
        ]
        let parameters = ["tenant", "model", "site", "from", "to", "group-by", "x"]
        let parameterValues = [
            "acme", "nan", "inf", "-inf", "1e300", "-1", "0", "2026-11-22", "2026-11-22T10:00:00Z", "tenant,day",
            "hour,day", "%00",
            "%FF%FE", "%0D%0A", String(repeating: "9", count: 400), "", "fra1",
        ]
        func pick<T>(_ list: [T]) -> T { list[Int(random.next() % UInt64(list.count))] }
        var statuses: [Int: Int] = [:]
        for iteration in 0..<300 {
            let response: (status: Int, json: [String: Any])
            var described = ""
            switch iteration % 4 {
            case 0:
                var members = [
                    "\"id\":\"p\(iteration)\"", "\"site\":\"fra1\"", "\"tenant\":\"acme\"", "\"model\":\"llama-13b\"",
                    "\"prompt_tokens\":1", "\"completion_tokens\":1", "\"started_at\":1795370000",
                    "\"ended_at\":1795370001",
                ]
                for _ in 0..<(1 + random.next() % 3) {
                    let member = "\"\(pick(fields))\":\(pick(scalars))"
                    if random.next() % 2 == 0 {
                        members[Int(random.next() % UInt64(members.count))] = member
                    } else {
                        members.append(member)
                    }
                }
                described = "{\"records\":[{\(members.joined(separator: ","))}]}"
                response = try await ledger.send(.POST, "/v1/usage", body: Data(described.utf8))
            case 1:
                let query = (0..<(1 + random.next() % 3)).map { _ in "\(pick(parameters))=\(pick(parameterValues))" }
                    .joined(separator: "&")
                described = "/v1/usage/summary?\(query)"
                response = try await ledger.send(.GET, described)
            case 2:
                described =
                    "/v1/balance/\(pick(["acme", "nobody", "%00", "ac%00me", "caf%C3%A9", String(repeating: "b", count: 2000)]))"
                response = try await ledger.send(.GET, described)
            default:
                let members = (0..<(1 + random.next() % 4)).map { _ in
                    "\"\(pick(["tenant", "tokens", "credits", "note", "x"]))\":\(pick(scalars))"
                }
                described = "{\(members.joined(separator: ","))}"
                response = try await ledger.send(
                    .POST, "/v1/allotments", body: Data(described.utf8), edge: nil, bearer: LedgerTests.adminKey)
            }
            statuses[response.status, default: 0] += 1
            #expect(
                (200..<500).contains(response.status),
                "seed \(seed), iteration \(iteration): \(described.prefix(300)) → \(response)")
            if !ledger.process.isRunning { break }
        }
        try await Self.alive(ledger)
        // The store is still sound after all of it.
        let verify = try run(tdndPath, ["ledger", "verify", "--config", ledger.directory + "/tdnd.yaml"])
        #expect(verify.status == 0, "seed \(seed): \(verify)")
        #expect(statuses.keys.contains(200) && statuses.keys.contains(400), "seed \(seed): \(statuses)")
    }

    @Test func aDamagedDatabaseIsRefusedAtStartAndByVerify() async throws {
        let ledger = try Ledger()
        for batch in 0..<4 {
            let records = (0..<500).map { LedgerTests.record("d\(batch)-\($0)") }
            #expect(try await ledger.post(records).status == 200)
        }
        #expect(ledger.stop())
        let database = ledger.directory + "/data/ledger.sqlite"
        let handle = try #require(FileHandle(forUpdatingAtPath: database))
        let size = try handle.seekToEnd()
        #expect(size > 16 * 4096, "the file is large enough to damage its middle")
        // Overwrite one page in the middle of the file (the header stays intact).
        try handle.seek(toOffset: size / 2 / 4096 * 4096)
        handle.write(Data(repeating: 0xA5, count: 4096))
        try handle.close()

        let config = ledger.directory + "/tdnd.yaml"
        let serve = try run(tdndPath, ["ledger", "serve", "--config", config], timeout: 20)
        #expect(serve.status == 1, "\(serve)")
        #expect(serve.error.contains("damaged"), "\(serve.error)")
        let verify = try run(tdndPath, ["ledger", "verify", "--config", config])
        #expect(verify.status == 1, "\(verify)")
        #expect(verify.error.contains("damaged"), "\(verify.error)")
    }

    /// The strict reader replaced Foundation's JSONDecoder: on valid batches (random strings
    /// with escapes and non-ASCII, numbers in several spellings, optional fields) both read the
    /// same records. Seeded: `TDN_TEST_SEED=N` replays.
    @Test func strictReaderAgreesWithJSONDecoderOnValidBatches() throws {
        let seed =
            ProcessInfo.processInfo.environment["TDN_TEST_SEED"].flatMap(UInt64.init)
            ?? UInt64.random(in: 1...UInt64.max >> 1)
        var random = SeededRandom(state: seed)
        let pieces = ["a", "Z", "9", "-", "é", "e\u{301}", "日本", "🦙", "\"", "\\", "/", " ", "\u{2028}", "x_y"]
        func text() -> String {
            (0..<(1 + random.next() % 12)).map { _ in pieces[Int(random.next() % UInt64(pieces.count))] }.joined()
        }
        for round in 0..<300 {
            let records = (0..<(1 + random.next() % 8)).map { _ in
                UsageRecord(
                    id: text(), site: text(), tenant: text(), model: text(),
                    promptTokens: Int(random.next() % 100_000_001),
                    completionTokens: Int(random.next() % 1000), startedAt: Double(random.next() % 4_000_000_000) / 7,
                    endedAt: Double(random.next() % 4_000_000_000) + 0.25,
                    requestID: random.next() % 2 == 0 ? nil : text())
            }
            var encoder = JSONEncoder()
            if round % 2 == 0 {
                encoder = JSONEncoder()
                encoder.outputFormatting = [.prettyPrinted, .withoutEscapingSlashes]
            }
            let body = try encoder.encode(UsageBatch(records: records))
            let reference = try JSONDecoder().decode(UsageBatch.self, from: body)
            let strict = try UsageBatch.decode(strict: Array(body))
            #expect(
                strict.records == reference.records,
                "seed \(seed), round \(round): \(String(decoding: body, as: UTF8.self))")
        }
    }

    /// Duplicate keys are found in objects of any size, in linear time (a quadratic scan of a
    /// 100,000-key object would take minutes).
    @Test func duplicateKeysInLargeObjects() throws {
        let keys = (0..<100_000).map { "\"k\($0)\":\($0)" }
        let unique = Array("{\(keys.joined(separator: ","))}".utf8)
        try StrictJSON.parse(unique) { (reader: inout StrictJSON) throws(JSONError) in try reader.skipValue() }
        let repeated = Array("{\(keys.joined(separator: ",")),\"k99\":1}".utf8)
        #expect(throws: JSONError.self) {
            try StrictJSON.parse(repeated) { (reader: inout StrictJSON) throws(JSONError) in try reader.skipValue() }
        }
        let early = Array(#"{"a":1,"b":2,"a":3}"#.utf8)
        #expect(throws: JSONError.self) {
            try StrictJSON.parse(early) { (reader: inout StrictJSON) throws(JSONError) in try reader.skipValue() }
        }
    }

    @Test func verifyReportsValuesOfTheWrongTypeInsteadOfTrapping() async throws {
        let ledger = try Ledger()
        #expect(try await ledger.post([LedgerTests.record("w1"), LedgerTests.record("w2")]).status == 200)
        let database = ledger.directory + "/data/ledger.sqlite"
        // SQLite accepts text in an INTEGER column; a hand-edited file may hold anything.
        #expect(
            try run("/usr/bin/sqlite3", [database, "UPDATE records SET prompt_tokens = 'many' WHERE id = 'w1'"]).status
                == 0)
        let verify = try run(tdndPath, ["ledger", "verify", "--config", ledger.directory + "/tdnd.yaml"])
        #expect(verify.status == 1, "\(verify)")
        #expect(verify.error.contains("wrong type"), "\(verify.error)")
    }

    @Test func slowClientsAreCutOffAndConnectionsCapped() async throws {
        let ledger = try Ledger(top: "http-header-timeout: 1\nhttp-body-timeout: 2\nhttp-max-connections: 8")
        // Eight clients trickling a request head a byte at a time hold every slot...
        let slow = (0..<8).compactMap { _ in RawTCP(port: ledger.port) }
        #expect(slow.count == 8)
        let start = monotonicSeconds()
        var cut = Set<Int>()
        let head = Array(
            "GET /healthz HTTP/1.1\r\nHost: localhost\r\nX-Padding: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa".utf8)
        // Each has started its head, and the server has taken all eight in, before the ninth comes.
        for connection in slow { connection.send([head[0]]) }
        usleep(300_000)
        var position = 1
        let waiting = try #require(RawTCP(port: ledger.port))
        waiting.send("GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
        let servedEarly = !waiting.receive(timeout: 0.5, limit: 1).bytes.isEmpty
        while monotonicSeconds() - start < 3, cut.count < slow.count {
            for (index, connection) in slow.enumerated() where !cut.contains(index) {
                if !connection.send([head[position % head.count]]) || connection.receive(timeout: 0.01).closed {
                    cut.insert(index)
                }
            }
            position += 1
            usleep(100_000)
        }
        // ...until the head deadline closes them, however steadily they send.
        let elapsed = monotonicSeconds() - start
        // The ninth client waited for a slot (the cap), and was served once the slow ones went.
        let (answer, _) = waiting.receive(timeout: 3, limit: 12)
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
            "POST /v1/allotments HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer \(LedgerTests.adminKey)\r\nContent-Length: 1000\r\n\r\n{"
        )
        let bodyStart = monotonicSeconds()
        var bodyClosed = false
        while monotonicSeconds() - bodyStart < 4 {
            if !body.send(" ") || body.receive(timeout: 0.2).closed {
                bodyClosed = true
                break
            }
        }
        #expect(bodyClosed && monotonicSeconds() - bodyStart < 3.5, "a trickled body was not cut off")
        // A normal client is served.
        try await Self.alive(ledger)
    }
}
