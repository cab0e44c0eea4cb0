import Foundation
import TDNTestSupport
import Testing

#if canImport(FoundationNetworking)
import FoundationNetworking
#endif

/// `tdnd explain` and the status port's `/explain` against a running daemon's answers.
@Suite("Explain", .tags(.slow))
struct ExplainTests {
    @Test func explainMatchesTheServer() async throws {
        let directory = makeTemporaryDirectory()
        writeFile(directory + "/t.example.zone", SteeringFixture.zone)
        writeFile(directory + "/policy.yaml", SteeringFixture.policy)
        let arguments = [
            "explain", "small.t.example", "--client", "5.9.1.0/24", "--zones", directory, "--policy",
            directory + "/policy.yaml", "--geoip", SteeringFixture.database, "--config", directory + "/none.yaml",
        ]
        writeFile(directory + "/none.yaml", "zones: .\n")
        let text = try await run(tdndPath, arguments)
        #expect(text.status == 0, "\(text.error)")
        #expect(text.output.contains("answer: fra → A 192.0.2.1 AAAA 2001:db8::1"))
        #expect(text.output.contains("ecs scope: /17"))
        #expect(text.output.contains("par        rtt"))
        let json = try await run(tdndPath, arguments + ["--json"])
        let report = try JSONSerialization.jsonObject(with: Data(json.output.utf8)) as? [String: Any]
        #expect(report?["ecsScope"] as? Int == 17)
        #expect(report?["answerSites"] as? [String] == ["fra"])
        #expect(report?["allowedJurisdictions"] as? [String] == ["eu"])
        #expect((report?["locatedBy"] as? String)?.hasPrefix("geo database network 5.9.0.0/16") == true)
    }

    @Test func explainOverTheStatusPort() async throws {
        let directory = makeTemporaryDirectory()
        writeFile(directory + "/t.example.zone", SteeringFixture.zone)
        writeFile(directory + "/policy.yaml", SteeringFixture.policy)
        writeFile(
            directory + "/tdnd.yaml",
            "zones: .\npolicy: policy.yaml\ngeoip: \(SteeringFixture.database)\nlisten: [127.0.0.1:0]\nstatus: 127.0.0.1:0\nthreads: 1\n"
        )
        let daemon = try DaemonProcess(config: directory + "/tdnd.yaml")
        let status = try #require(
            await daemon.port(after: "status server on 127.0.0.1:"), "the status server reports its port")
        func get(_ path: String) async throws -> (Int, Data) {
            let (data, response) = try await URLSession.shared.data(
                from: URL(string: "http://127.0.0.1:\(status)\(path)")!)
            return ((response as? HTTPURLResponse)?.statusCode ?? 0, data)
        }
        let (healthCode, health) = try await get("/healthz")
        #expect(healthCode == 200 && String(decoding: health, as: UTF8.self) == "ok\n")
        let (code, body) = try await get("/explain?host=small.t.example&client=5.9.1.0/24")
        #expect(code == 200)
        let report = try JSONSerialization.jsonObject(with: body) as? [String: Any]
        #expect(report?["answerSites"] as? [String] == ["fra"])
        #expect(report?["ecsScope"] as? Int == 17)
        let (badCode, bad) = try await get("/explain?host=nothing.t.example&client=5.9.1.0/24")
        #expect(
            badCode == 400
                && String(decoding: bad, as: UTF8.self).hasPrefix("nothing.t.example is not a model hostname"))
        let (missingCode, _) = try await get("/explain?host=small.t.example")
        #expect(missingCode == 400)
    }
}
