import Foundation
import TDNDNS
import TDNTestSupport
import Testing

@testable import TDNDaemon

#if canImport(FoundationNetworking)
import FoundationNetworking
#endif

/// Model hostnames through real sockets: ECS or source address → class → site, with the scope.
@Suite("Steering end to end", .serialized)
struct SteeringTests {
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent()

    static let zone = """
        $TTL 300
        @ IN SOA ns1 hostmaster 1 7200 900 1209600 60
          IN NS ns1
        ns1 IN A 192.0.2.53
        """

    static let policy = """
        zone: t.example
        jurisdictions: {eu: [DE, FR], us: [US]}
        rules:
          - {clients-in: eu, served-in: [eu]}
          - {clients-in: us, served-in: [us]}
        unknown-location: {served-in: [us]}
        denial: {mode: empty, ttl: 5}
        near-equal-ms: 0
        sites:
          fra: {tier: edge, location: {lat: 50.1, lon: 8.7, country: DE}, jurisdiction: eu, ipv4: [192.0.2.1], ipv6: ["2001:db8::1"]}
          par: {tier: edge, location: {lat: 48.9, lon: 2.4, country: FR}, jurisdiction: eu, ipv4: [192.0.2.2], ipv6: ["2001:db8::2"]}
          nyc: {tier: edge, location: {lat: 40.7, lon: -74.0, country: US}, jurisdiction: us, ipv4: [198.51.100.1], ipv6: ["2001:db8:1::1"]}
        models:
          small: {size: 7b, answers: 1, ttl: 20}
          sovereign: {size: 7b, served-in: [eu], answers: 1}
        networks:
          - {name: metro-paris, prefix: 5.9.128.0/17, country: FR, lat: 48.9, lon: 2.4}
          - {name: lab, prefix: 127.0.0.0/8, country: FR, lat: 48.9, lon: 2.4}
        """

    static let networks = "5.9.0.0/16,DE\n8.8.8.0/24,US\n2a01:4f8::/32,DE\n"

    /// The test MMDB, built once by the project's script.
    static let database: String = {
        let directory = makeTemporaryDirectory()
        writeFile(directory + "/networks.csv", networks)
        let result = try! run(
            "/usr/bin/env",
            [
                "python3", root.appendingPathComponent("scripts/build-geoip.py").path, "--networks",
                directory + "/networks.csv", "--out", directory + "/test.mmdb",
            ])
        precondition(result.status == 0, result.error)
        return directory + "/test.mmdb"
    }()

    /// A directory with the test zone (or `zone` instead) and the test policy, for `config`.
    static func directory(zone text: String = zone) -> String {
        let directory = makeTemporaryDirectory()
        writeFile(directory + "/t.example.zone", text)
        writeFile(directory + "/policy.yaml", policy)
        return directory
    }

    /// The test zone and policy compiled as the daemon compiles them.
    static func snapshot() throws -> Snapshot {
        try ConfigurationLoader(config: config(directory())).load().get().snapshot
    }

    static func config(_ directory: String) -> DaemonConfig {
        var config = DaemonConfig()
        config.zones = directory
        config.policy = directory + "/policy.yaml"
        config.geoip = database
        return config
    }

    static func start() async throws -> TestServer {
        try await TestServer.start(
            zones: ["t.example.zone": zone, "policy.yaml": policy], threads: 1,
            load: {
                ConfigurationLoader(config: config($0)).load()
            })
    }

    func ask(
        _ server: TestServer, _ name: String, _ type: RecordType = .a, subnet: String? = nil, tcp: Bool = false
    ) throws -> Message {
        var edns = EDNS()
        if let subnet {
            let prefix = subnet.split(separator: "/")
            let address = IPAddressText.parse(String(prefix[0]))!
            edns.clientSubnet = ClientSubnet(address: address, prefix: UInt8(prefix[1])!)
        }
        return try server.client.query(Message.query(Fixtures.name(name), type, edns: edns), tcp: tcp)
    }

    struct Case: CustomTestStringConvertible, Sendable {
        var subnet: String
        var type: RecordType = .a
        var answer: [String]
        var scope: UInt8
        var testDescription: String { "\(subnet) \(type)" }
    }

    static let cases: [Case] = [
        // 5.9.0.0/16 is DE, but the operator's 5.9.128.0/17 splits it: the DE half is a /17.
        Case(subnet: "5.9.1.0/24", answer: ["192.0.2.1"], scope: 17),
        Case(subnet: "5.9.200.0/24", answer: ["192.0.2.2"], scope: 17),
        Case(subnet: "5.9.1.0/24", type: .aaaa, answer: ["2001:db8::1"], scope: 17),
        // 8.8.8.0/24 is US; the rest of 8.0.0.0/5 is not located, which this policy also serves
        // from the US: every name answers the same across the /5, so that is the scope.
        Case(subnet: "8.8.8.0/24", answer: ["198.51.100.1"], scope: 5),
        // A source prefix shorter than the network that decides: the scope says how far it holds.
        Case(subnet: "5.9.0.0/16", answer: ["192.0.2.1"], scope: 17),
        Case(subnet: "2a01:4f8:1::/48", answer: ["192.0.2.1"], scope: 32),
        // IPv4-mapped IPv6 locates as IPv4, the scope counted in IPv6 bits.
        Case(subnet: "::ffff:5.9.1.0/120", answer: ["192.0.2.1"], scope: 113),
        // Not located: the policy's unknown-location jurisdictions. Nothing in 128.0.0.0/1 is
        // located (5.9/16, 8.8.8/24 and the lab's 127/8 are all in 0/1), so the scope is /1.
        Case(subnet: "192.0.2.0/24", answer: ["198.51.100.1"], scope: 1),
        // Other types do not depend on the client.
        Case(subnet: "5.9.1.0/24", type: .txt, answer: [], scope: 0),
    ]

    @Test(arguments: cases)
    func answerAndScope(_ item: Case) async throws {
        let server = try await Self.start()
        defer { Task { await server.stop() } }
        let response = try ask(server, "small.t.example.", item.type, subnet: item.subnet)
        #expect(response.rcode == .noError && response.header.authoritative)
        #expect(response.answers.map(\.rdataText) == item.answer)
        #expect(response.answers.allSatisfy { $0.ttl == 20 })
        let echoed = try #require(response.edns?.clientSubnet)
        #expect(echoed.scopePrefixLength == item.scope)
        #expect(echoed.sourcePrefixLength == UInt8(item.subnet.split(separator: "/")[1])!)
    }

    @Test func withoutECSTheSourceAddressLocates() async throws {
        let server = try await Self.start()
        defer { Task { await server.stop() } }
        // 127.0.0.1 is the operator network "lab" (Paris) → par, over UDP and TCP alike.
        for tcp in [false, true] {
            let response = try ask(server, "small.t.example.", tcp: tcp)
            #expect(response.answers.map(\.rdataText) == ["192.0.2.2"])
            #expect(response.edns?.clientSubnet == nil, "no ECS in the reply to a query without it")
        }
        // Source prefix 0 (RFC 7871 §7.1.2): the client asked not to be located by its subnet.
        // The sender locates it (an unlocated 0.0.0.0 would get nyc), and the scope is 0.
        let optOut = try ask(server, "small.t.example.", subnet: "0.0.0.0/0")
        #expect(optOut.answers.map(\.rdataText) == ["192.0.2.2"])
        #expect(optOut.edns?.clientSubnet?.scopePrefixLength == 0)
    }

    @Test func denialIsShortLivedAndScoped() async throws {
        let server = try await Self.start()
        defer { Task { await server.stop() } }
        let response = try ask(server, "sovereign.t.example.", subnet: "8.8.8.0/24")
        #expect(response.rcode == .noError && response.answers.isEmpty)
        #expect(response.authority.map(\.ttl) == [5], "the SOA carries the denial TTL")
        #expect(response.edns?.clientSubnet?.scopePrefixLength == 5)
        let allowed = try ask(server, "sovereign.t.example.", subnet: "5.9.1.0/24")
        #expect(allowed.answers.map(\.rdataText) == ["192.0.2.1"])
    }

    @Test func digSeesDifferentSitesForDifferentSubnets() async throws {
        let server = try await Self.start()
        defer { Task { await server.stop() } }
        func dig(_ subnet: String) throws -> String {
            try run(
                "/usr/bin/dig",
                [
                    "-p", String(server.port), "@127.0.0.1", "+norec", "+time=2", "+tries=1", "+subnet=\(subnet)",
                    "small.t.example", "A",
                ]
            ).output
        }
        let germany = try dig("5.9.1.0/24")
        let us = try dig("8.8.8.0/24")
        #expect(germany.contains("small.t.example.\t20\tIN\tA\t192.0.2.1"))
        #expect(germany.contains("CLIENT-SUBNET: 5.9.1.0/24/17"))
        #expect(us.contains("small.t.example.\t20\tIN\tA\t198.51.100.1"))
        #expect(us.contains("CLIENT-SUBNET: 8.8.8.0/24/5"))
    }

    @Test func policyReloadKeepsTheOldPolicyOnError() async throws {
        let server = try await Self.start()
        defer { Task { await server.stop() } }
        // Break the policy: the old one keeps answering.
        server.write("policy.yaml", Self.policy.replacingOccurrences(of: "tier: edge", with: "tier: fog"))
        guard case .failed(let errors) = server.reloader.reload() else {
            Issue.record("a broken policy reloaded")
            return
        }
        #expect(
            errors.contains { $0.hasSuffix("policy.yaml:10: sites.fra.tier: tier must be edge, regional or central") })
        #expect(try ask(server, "small.t.example.", subnet: "5.9.1.0/24").answers.map(\.rdataText) == ["192.0.2.1"])
        // A good change (fra gone) is picked up by the watcher's check.
        usleep(10_000)
        server.write(
            "policy.yaml",
            Self.policy.replacingOccurrences(
                of:
                    "  fra: {tier: edge, location: {lat: 50.1, lon: 8.7, country: DE}, jurisdiction: eu, ipv4: [192.0.2.1], ipv6: [\"2001:db8::1\"]}\n",
                with: ""))
        #expect(server.reloader.reloadIfChanged() == .reloaded(zones: 1))
        #expect(try ask(server, "small.t.example.", subnet: "5.9.1.0/24").answers.map(\.rdataText) == ["192.0.2.2"])
    }

    @Test func explainMatchesTheServer() async throws {
        let directory = makeTemporaryDirectory()
        writeFile(directory + "/t.example.zone", Self.zone)
        writeFile(directory + "/policy.yaml", Self.policy)
        let arguments = [
            "explain", "small.t.example", "--client", "5.9.1.0/24", "--zones", directory, "--policy",
            directory + "/policy.yaml", "--geoip", Self.database, "--config", directory + "/none.yaml",
        ]
        writeFile(directory + "/none.yaml", "zones: .\n")
        let text = try run(tdndPath, arguments)
        #expect(text.status == 0, "\(text.error)")
        #expect(text.output.contains("answer: fra → A 192.0.2.1 AAAA 2001:db8::1"))
        #expect(text.output.contains("ecs scope: /17"))
        #expect(text.output.contains("par        rtt"))
        let json = try run(tdndPath, arguments + ["--json"])
        let report = try JSONSerialization.jsonObject(with: Data(json.output.utf8)) as? [String: Any]
        #expect(report?["ecsScope"] as? Int == 17)
        #expect(report?["answerSites"] as? [String] == ["fra"])
        #expect(report?["allowedJurisdictions"] as? [String] == ["eu"])
        #expect((report?["locatedBy"] as? String)?.hasPrefix("geo database network 5.9.0.0/16") == true)
    }

    @Test func explainOverTheStatusPort() async throws {
        let directory = makeTemporaryDirectory()
        writeFile(directory + "/t.example.zone", Self.zone)
        writeFile(directory + "/policy.yaml", Self.policy)
        writeFile(
            directory + "/tdnd.yaml",
            "zones: .\npolicy: policy.yaml\ngeoip: \(Self.database)\nlisten: [127.0.0.1:0]\nstatus: 127.0.0.1:0\nthreads: 1\n"
        )
        let daemon = try DaemonProcess(config: directory + "/tdnd.yaml")
        let status = try #require(
            daemon.port(after: "status server on 127.0.0.1:"), "the status server reports its port")
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

    @Test func modelNameBesideZoneDataIsRejected() throws {
        let directory = makeTemporaryDirectory()
        writeFile(directory + "/t.example.zone", Self.zone + "\nsmall IN A 192.0.2.9\n")
        writeFile(directory + "/policy.yaml", Self.policy)
        guard case .failure(let errors) = ConfigurationLoader(config: Self.config(directory)).load() else {
            Issue.record("a model name with zone data loaded")
            return
        }
        #expect(
            errors.errors.map(\.message) == [
                "model hostname small.t.example. also has records in \(directory)/t.example.zone"
            ])
    }
}

enum IPAddressText {
    static func parse(_ text: String) -> [UInt8]? {
        var v4 = in_addr()
        if inet_pton(AF_INET, text, &v4) == 1 { return withUnsafeBytes(of: v4) { Array($0) } }
        var v6 = in6_addr()
        if inet_pton(AF_INET6, text, &v6) == 1 { return withUnsafeBytes(of: v6) { Array($0) } }
        return nil
    }
}
