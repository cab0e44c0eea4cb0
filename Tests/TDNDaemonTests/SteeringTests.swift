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

    static let zone = SteeringFixture.zone
    static let policy = SteeringFixture.policy
    static var database: String { SteeringFixture.database }

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
        return try server.client.query(Message.query(try DomainName(name), type, edns: edns), tcp: tcp)
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
        #expect(response.rcode == .noError && response.header[.authoritative])
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
        func dig(_ subnet: String) async throws -> String {
            try await run(
                "/usr/bin/dig",
                [
                    "-p", String(server.port), "@127.0.0.1", "+norec", "+time=2", "+tries=1", "+subnet=\(subnet)",
                    "small.t.example", "A",
                ]
            ).output
        }
        let germany = try await dig("5.9.1.0/24")
        let us = try await dig("8.8.8.0/24")
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
        try await Task.sleep(for: .milliseconds(10))
        server.write(
            "policy.yaml",
            Self.policy.replacingOccurrences(
                of:
                    "  fra: {tier: edge, location: {lat: 50.1, lon: 8.7, country: DE}, jurisdiction: eu, ipv4: [192.0.2.1], ipv6: [\"2001:db8::1\"]}\n",
                with: ""))
        #expect(server.reloader.reloadIfChanged() == .reloaded(zones: 1))
        #expect(try ask(server, "small.t.example.", subnet: "5.9.1.0/24").answers.map(\.rdataText) == ["192.0.2.2"])
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
