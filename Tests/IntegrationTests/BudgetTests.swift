import AsyncHTTPClient
import FakeEdge
import Foundation
import TDNDNS
import TDNTestSupport
import Testing

/// Answer-share budgets end to end: a running tdnd, two fake vLLM edges (the probe tests'
/// policy, probed four times a second), and clients from 256 /24s of one location class (the
/// lab network, 127.0.0.0/8). The near edge's load is what the clients it is given make of it
/// (the test closes the loop: load = demand × its share ÷ its capacity), and the demand rises
/// step by step past its capacity. Its share of answers must fall gradually, in steps of
/// shards, never flipping the whole class to the far edge, and hold between the water marks.
@Suite("Answer-share budgets end to end", .serialized, .timing)
struct BudgetTests {
    /// The share of the 256 client /24s answered with the near edge, and whether every
    /// answer named one of the two edges.
    static func nearShare(_ client: DNSClient) throws -> (share: Double, valid: Bool) {
        var near = 0
        var valid = true
        for third in 0..<256 {
            var edns = EDNS()
            edns.clientSubnet = ClientSubnet(family: 1, sourcePrefixLength: 24, address: [127, UInt8(third), 7])
            let response = try client.query(Message.query(try DomainName("m-7b.p.example."), .a, edns: edns))
            let addresses = response.answers.map(\.rdataText)
            if addresses == ["192.0.2.1"] { near += 1 } else if addresses != ["192.0.2.2"] { valid = false }
        }
        return (Double(near) / 256, valid)
    }

    @Test func theNearEdgesShareFallsGraduallyAsItsLoadRises() async throws {
        let directory = makeTemporaryDirectory()
        let fleet = try await FakeEdgeFleet.start(sites: ["near", "far"], models: ["m-7b"])
        fleet.setLoad("near", 0.3)
        fleet.setLoad("far", 0.2)
        writeFile(directory + "/p.example.zone", ZoneFixture.apex())
        writeFile(
            directory + "/policy.yaml",
            ProbeFailoverTests.policy(
                fleet: fleet,
                probes:
                    "{interval: 0.25, timeout: 0.2, jitter: 0.02, rise: 1, fall: 2, high-water: 0.9, low-water: 0.75}"))
        writeFile(directory + "/tdnd.yaml", daemonConfig())
        let daemon = try DaemonProcess(config: directory + "/tdnd.yaml", arguments: ["--log-level", "debug"])
        do { try await Self.rise(daemon: daemon, fleet: fleet) } catch {
            await terminate(daemon.process)
            await fleet.stop()
            throw error
        }
        await terminate(daemon.process)
        await fleet.stop()
    }

    static func rise(daemon: DaemonProcess, fleet: FakeEdgeFleet) async throws {
        let port = try #require(await daemon.dnsPort(), "\(daemon.log)")
        let client = DNSClient(server: ListenAddress("127.0.0.1:\(port)")!)

        // Demand relative to the near edge's capacity, step by step.
        var shares: [(demand: Double, share: Double)] = []
        var seenShares: [String] = []
        for demand in [0.6, 0.85, 1.1, 1.4, 1.8] {
            var share = 1.0
            let start = Date()
            while Date().timeIntervalSince(start) < 9 {
                let seen = try nearShare(client)
                #expect(seen.valid, "every answer names an edge")
                share = seen.share
                seenShares.append("\(Int(share * 256))")
                fleet.setLoad("near", min(1, demand * share))
                try await Task.sleep(for: .milliseconds(100))
            }
            shares.append((demand, share))
            seenShares.append("|")
        }
        let summary =
            shares.map { "demand \($0.demand): near \($0.share)" }.joined(separator: "; ") + " (over time, /24s near: "
            + seenShares.joined(separator: " ") + ")"
        // Within capacity (below the high-water mark, and between the marks) all stay near.
        #expect(shares[0].share == 1 && shares[1].share == 1, "\(summary)")
        // Past it, the share falls in steps, towards what the edge can take below its low-water
        // mark (0.75 / demand), and never to nothing.
        for (index, step) in shares.enumerated().dropFirst(2) {
            #expect(step.share < shares[index - 1].share, "\(summary)")
            #expect(step.share > 0.5 * 0.75 / step.demand, "\(summary)")
            #expect(step.share < 0.95, "\(summary)")
        }
        #expect(daemon.log.contains("budgets moved"), "\(daemon.log.suffix(2000))")
        print("budgets end to end: \(summary)")

        // Explain says why a moved /24 goes to the far edge; /metrics has the shares.
        let status = try #require(await daemon.port(after: "status server on 127.0.0.1:"))
        func get(_ path: String) async throws -> String {
            let response = try await HTTPClient.shared.execute(
                HTTPClientRequest(url: "http://127.0.0.1:\(status)\(path)"), timeout: .seconds(5))
            return String(buffer: try await response.body.collect(upTo: 1 << 22))
        }
        var moved: Int? = nil
        for third in 0..<256 where moved == nil {
            var edns = EDNS()
            edns.clientSubnet = ClientSubnet(family: 1, sourcePrefixLength: 24, address: [127, UInt8(third), 7])
            let response = try client.query(Message.query(try DomainName("m-7b.p.example."), .a, edns: edns))
            if response.answers.map(\.rdataText) == ["192.0.2.2"] { moved = third }
        }
        let third = try #require(moved)
        let body = try await get("/explain?host=m-7b.p.example&client=127.\(third).7.0/24")
        let report = try JSONSerialization.jsonObject(with: Data(body.utf8)) as? [String: Any]
        let budget = try #require(report?["budget"] as? [String: Any], "\(body)")
        print("budgets end to end: /explain: \(body)")
        #expect(budget["answerSites"] as? [String] == ["far"], "\(body)")
        #expect((budget["reason"] as? String)?.hasPrefix("near has no room for this shard") == true, "\(body)")
        #expect((budget["demand"] as? Double ?? 0) > 0, "\(body)")
        let metrics = try await get("/metrics")
        let nearShare = metrics.split(separator: "\n").first { $0.hasPrefix("tdn_site_demand_share{site=\"near\"}") }
            .flatMap { Double($0.split(separator: " ").last ?? "") }
        #expect(nearShare.map { abs($0 - shares[4].share) < 0.1 } == true, "\(metrics)")
        #expect(metrics.contains("tdn_site_demand_budget_share{site=\"near\"}"))
    }
}
