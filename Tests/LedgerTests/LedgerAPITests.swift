import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import Ledger
import Logging
import NIOCore
import NIOHTTP1
import TDNTestSupport
import Testing

/// Which way a test reaches the API: requests handed to the router, or over a live socket.
enum LedgerSetup: String, CaseIterable, Sendable {
    case router, live

    var testing: TestingSetup { self == .router ? .router : .ahc(.http) }
}

/// The ledger's API in process with its real SQLite file, driven over HummingbirdTesting's
/// client: the same router the daemon serves.
struct InProcessLedger: LedgerEndpoint {
    let client: any TestClientProtocol
    let directory: String

    var store: LedgerStore { get throws { try LedgerStore(directory: directory + "/data") } }

    func request(
        _ method: NIOHTTP1.HTTPMethod, _ path: String, headers: [(String, String)], body: Data
    ) async throws
        -> (status: Int, body: Data)
    {
        var fields = HTTPFields()
        for (name, value) in headers {
            if let field = HTTPField.Name(name) { fields.append(HTTPField(name: field, value: value)) }
        }
        let response = try await client.executeRequest(
            uri: path, method: HTTPRequest.Method(method.rawValue) ?? .get, headers: fields,
            body: ByteBuffer(bytes: body))
        return (Int(response.status.code), Data(response.body.readableBytesView))
    }
}

/// Runs `body` against a fresh ledger (router or live), then removes its files.
func withLedger(
    _ setup: LedgerSetup, _ body: @escaping @Sendable (InProcessLedger) async throws -> Void
)
    async throws
{
    let directory = makeTemporaryDirectory()
    defer { try? FileManager.default.removeItem(atPath: directory) }
    let store = try LedgerStore(directory: directory + "/data")
    var logger = Logger(label: "tdn.ledger")
    logger.logLevel = .warning
    let router = LedgerAPI.router(store: store, settings: LedgerFixture.settings, logger: logger)
    let app = Application(
        router: router, configuration: .init(address: .hostname("127.0.0.1", port: 0)), logger: logger)
    try await app.test(setup.testing) { client in try await body(InProcessLedger(client: client, directory: directory))
    }
}

/// The API as an edge, an admin or an attacker uses it: one test body against the router and
/// against a live socket. Bad input gets a 4xx with the reason and stores nothing partial.
@Suite("Ledger API")
struct LedgerAPITests {
    static func alive(_ ledger: InProcessLedger) async throws {
        #expect(try await ledger.send(.GET, "/healthz", edge: nil).status == 200)
    }

    @Test(arguments: LedgerSetup.allCases)
    func goodBatchIsStoredOnceAndCounted(_ setup: LedgerSetup) async throws {
        try await withLedger(setup) { ledger in
            let batch = (0..<3).map { LedgerFixture.record("r\($0)") }
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
            let conflict = try await ledger.post([LedgerFixture.record("r9")] + changed)
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
            let allotment = try JSONSerialization.data(withJSONObject: [
                "tenant": "acme", "tokens": 1000, "credits": 1.5,
            ])
            #expect(try await ledger.send(.POST, "/v1/allotments", body: allotment, edge: "fra1").status == 401)
            #expect(
                try await ledger.send(
                    .POST, "/v1/allotments", body: allotment, edge: nil, bearer: LedgerFixture.adminKey
                ).status
                    == 200)
            let balance = try await ledger.send(.GET, "/v1/balance/acme")
            #expect(balance.json["balance_tokens"] as? Int == 1000 - 450, "\(balance)")
            #expect(abs((balance.json["balance_credits"] as? Double ?? 0) - 1.35) < 1e-9)
            #expect(
                try await ledger.send(.GET, "/v1/balance/acme", edge: nil).status == 401,
                "every endpoint but /healthz needs authentication")
            #expect(try await ledger.send(.GET, "/v1/balance/nobody").status == 404)
            let verified = try ledger.store.verify()
            #expect(verified.problems.isEmpty && verified.batches == 1 && verified.records == 3, "\(verified.problems)")

        }
    }

    @Test(arguments: LedgerSetup.allCases)
    func badBatchesStoreNothing(_ setup: LedgerSetup) async throws {
        try await withLedger(setup) { ledger in
            let good = LedgerFixture.record("ok-1")
            var negative = LedgerFixture.record("neg")
            negative.promptTokens = -1
            var backwards = LedgerFixture.record("back")
            backwards.endedAt = backwards.startedAt - 1
            let cases: [(String, [UsageRecord], String)] = [
                ("unknown tenant", [good, LedgerFixture.record("t", tenant: "initech")], "unknown tenant 'initech'"),
                (
                    "unknown model", [good, LedgerFixture.record("m", model: "gpt-9")],
                    "unknown model 'gpt-9' (no rate)"
                ),
                (
                    "another site", [good, LedgerFixture.record("s", site: "par1")],
                    "site 'par1' is not the signing edge 'fra1'"
                ),
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
            #expect(try await ledger.post([good], key: LedgerFixture.otherKey).status == 401)
            #expect(try await ledger.post([good], edge: "mars1").status == 401)
            #expect(
                try await ledger.post([good], timestamp: Date().timeIntervalSince1970 - 120).status == 401,
                "older than the 60 s skew: a replay")
            #expect(try await ledger.post([good], timestamp: Date().timeIntervalSince1970 + 120).status == 401)
            // A body changed after signing.
            let body = try JSONEncoder().encode(UsageBatch(records: [good]))
            let stamp = String(Int(Date().timeIntervalSince1970))
            let signature = RequestSignature.sign(
                key: LedgerFixture.edgeKey, method: "POST", target: "/v1/usage", timestamp: stamp, body: body)
            var tampered = body
            tampered.append(contentsOf: Array(" ".utf8))
            let headers = [("X-TDN-Edge", "fra1"), ("X-TDN-Timestamp", stamp), ("X-TDN-Signature", signature)]
            #expect(try await ledger.request(.POST, "/v1/usage", headers: headers, body: tampered).status == 401)

            #expect(try ledger.recordCount() == 0, "nothing of any refused batch was stored")
            #expect(try await ledger.post([good]).status == 200)
            #expect(try ledger.recordCount() == 1)
        }
    }

    @Test(arguments: LedgerSetup.allCases)
    func concurrentIngestGivesExactTotals(_ setup: LedgerSetup) async throws {
        try await withLedger(setup) { ledger in
            let clients = 16
            let batches = 10
            let size = 50
            try await withThrowingTaskGroup(of: Void.self) { group in
                for client in 0..<clients {
                    group.addTask {
                        for batch in 0..<batches {
                            let records = (0..<size).map {
                                LedgerFixture.record(
                                    "c\(client)-b\(batch)-\($0)", tenant: client % 2 == 0 ? "acme" : "globex",
                                    prompt: 10,
                                    completion: 1)
                            }
                            let response = try await ledger.post(records)
                            #expect(response.status == 200 && response.json["stored"] as? Int == size)
                            // Every other batch is retried: counted once.
                            if batch % 2 == 0 {
                                #expect(try await ledger.post(records).json["duplicates"] as? Int == size)
                            }
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
    }

    @Test(arguments: LedgerSetup.allCases)
    func summaryParametersThatDoNotFitAre400(_ setup: LedgerSetup) async throws {
        try await withLedger(setup) { ledger in
            let values = [
                "nan", "NaN", "inf", "-inf", "infinity", "1e300", "-1e300", "1e19", "9223372036854775808",
                "-9223372036854775809",
                "-1", "253402300800", "", "1.5e", "0x10", "2026-13-45", "%00", "9%00",
                String(repeating: "9", count: 5000),
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
            try await LedgerAPITests.alive(ledger)

        }
    }

    @Test(arguments: LedgerSetup.allCases)
    func extremeAllotmentsAreRefusedAndBalancesStayReadable(_ setup: LedgerSetup) async throws {
        try await withLedger(setup) { ledger in
            func allot(_ json: String) async throws -> (status: Int, json: [String: Any]) {
                try await ledger.send(
                    .POST, "/v1/allotments", body: Data(json.utf8), edge: nil, bearer: LedgerFixture.adminKey)
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
            let seeded = try await sqlite(
                database, "UPDATE tenant_totals SET allotted_tokens = 3999999999999999999 WHERE tenant = 'acme'")
            #expect(seeded.status == 0, "\(seeded.error)")
            let over = try await allot(#"{"tenant":"acme","tokens":1000000000000000}"#)
            #expect(over.status == 400, "\(over)")
            #expect((over.json["error"] as? String ?? "").contains("bound"), "\(over)")
            let balance = try await ledger.send(.GET, "/v1/balance/acme")
            #expect(
                balance.status == 200 && balance.json["allotted_tokens"] as? Int == 3_999_999_999_999_999_999,
                "\(balance)")

            try await LedgerAPITests.alive(ledger)
        }
    }

    @Test(arguments: LedgerSetup.allCases)
    func signedReadsCoverTheQueryString(_ setup: LedgerSetup) async throws {
        try await withLedger(setup) { ledger in
            #expect(try await ledger.post([LedgerFixture.record("q1")]).status == 200)
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
    }

    @Test(arguments: LedgerSetup.allCases)
    func controlCharactersAreRefusedAndIDsCompareByBytes(_ setup: LedgerSetup) async throws {
        try await withLedger(setup) { ledger in
            var nul = LedgerFixture.record("a\u{0}b")
            let refused = try await ledger.post([nul])
            #expect(refused.status == 400, "\(refused)")
            #expect("\(refused.json)".contains("control character"), "\(refused)")
            nul = LedgerFixture.record("ok-1")
            nul.requestID = "req\u{0}x"
            #expect(try await ledger.post([nul]).status == 400)
            var tab = LedgerFixture.record("ok-2")
            tab.model = "llama-13b\t"
            #expect(try await ledger.post([tab]).status == 400)
            #expect(try ledger.recordCount() == 0)

            // Two canonically equal spellings are two ids, as they are to SQLite.
            let composed = LedgerFixture.record("caf\u{E9}")
            let decomposed = LedgerFixture.record("cafe\u{301}")
            #expect(composed.id == decomposed.id, "Swift's String == is canonical equivalence")
            let both = try await ledger.post([composed, decomposed])
            #expect(both.status == 200 && both.json["stored"] as? Int == 2, "\(both)")
            let again = try await ledger.post([decomposed])
            #expect(again.status == 200 && again.json["duplicates"] as? Int == 1, "\(again)")
            #expect(Set(try ledger.store.recordIDs().map { Array($0.utf8) }).count == 2)
            #expect(try ledger.store.verify().problems.isEmpty)
        }
    }

    @Test(arguments: LedgerSetup.allCases)
    func jsonIsDecodedStrictly(_ setup: LedgerSetup) async throws {
        try await withLedger(setup) { ledger in
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
            var huge = LedgerFixture.record("j2")
            huge.tenant = String(repeating: "x", count: 1 << 20)
            let big = try await ledger.send(
                .POST, "/v1/usage", body: try JSONEncoder().encode(UsageBatch(records: [huge])))
            #expect(big.status == 400)
            #expect("\(big.json)".utf8.count < 4096, "the error echoed \("\(big.json)".utf8.count) bytes")
            let allotment = try await ledger.send(
                .POST, "/v1/allotments", body: Data(#"{"tenant":"acme","tokens":5,"tokens":500}"#.utf8), edge: nil,
                bearer: LedgerFixture.adminKey)
            #expect(allotment.status == 400, "\(allotment)")
            #expect(try ledger.recordCount() == 0)
        }
    }

    /// Random and extreme values in every endpoint's query parameters and JSON fields: a 2xx
    /// or 4xx every time, and a live process afterwards. Seeded: `TDN_TEST_SEED=N` replays.
    @Test(.timing, arguments: LedgerSetup.allCases)
    func randomAndExtremeInputIsAnsweredAndSurvived(_ setup: LedgerSetup) async throws {
        try await withLedger(setup) { ledger in
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
                        "\"id\":\"p\(iteration)\"", "\"site\":\"fra1\"", "\"tenant\":\"acme\"",
                        "\"model\":\"llama-13b\"",
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
                    let query = (0..<(1 + random.next() % 3)).map { _ in "\(pick(parameters))=\(pick(parameterValues))"
                    }
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
                        .POST, "/v1/allotments", body: Data(described.utf8), edge: nil, bearer: LedgerFixture.adminKey)
                }
                statuses[response.status, default: 0] += 1
                #expect(
                    (200..<500).contains(response.status),
                    "seed \(seed), iteration \(iteration): \(described.prefix(300)) → \(response)")
            }
            try await LedgerAPITests.alive(ledger)
            // The store is still sound after all of it.
            let verified = try ledger.store.verify()
            #expect(verified.problems.isEmpty, "seed \(seed): \(verified.problems)")
            #expect(statuses.keys.contains(200) && statuses.keys.contains(400), "seed \(seed): \(statuses)")
        }
    }
}
