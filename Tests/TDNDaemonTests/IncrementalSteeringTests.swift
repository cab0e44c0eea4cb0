import GeoPolicy
import TDNTestSupport
import Testing

@testable import TDNDNS
@testable import TDNDaemon

/// A health change rebuilds only the steering part, from the compiler's kept decisions and the
/// previous part's encodings and tries. After any sequence of changes, every response must be
/// byte for byte the one a full load under the same health gives: answers, TTLs, ECS scopes.
@Suite("Incremental steering", .cpuBound)
struct IncrementalSteeringTests {
    static let policy = """
        zone: t.example
        jurisdictions: {eu: [DE, FR], us: [US]}
        rules:
          - {clients-in: eu, served-in: [eu]}
        unknown-location: {served-in: [us, eu]}
        denial: {mode: endpoint, ttl: 5, endpoints: {eu: {ipv4: [192.0.2.250]}}}
        near-equal-ms: 8
        health: {when-all-down: last-known-good, unsettled-ttl: 4}
        sites:
          fra: {tier: edge, location: {lat: 50.1, lon: 8.7, country: DE}, jurisdiction: eu, ipv4: [192.0.2.1], ipv6: ["2001:db8::1"]}
          fra2: {tier: edge, location: {lat: 50.2, lon: 8.6, country: DE}, jurisdiction: eu, ipv4: [192.0.2.11]}
          par: {tier: edge, location: {lat: 48.9, lon: 2.4, country: FR}, jurisdiction: eu, ipv4: [192.0.2.2], ipv6: ["2001:db8::2"]}
          ber: {tier: regional, location: {lat: 52.5, lon: 13.4, country: DE}, jurisdiction: eu, ipv4: [192.0.2.3], ipv6: ["2001:db8::3"], max-model: 70b}
          nyc: {tier: edge, location: {lat: 40.7, lon: -74.0, country: US}, jurisdiction: us, ipv4: [198.51.100.1], ipv6: ["2001:db8:1::1"]}
          dfw: {tier: central, location: {lat: 32.8, lon: -96.8, country: US}, jurisdiction: us, ipv4: [198.51.100.2], max-model: 405b}
        models:
          small: {size: 7b, answers: 2, ttl: 20}
          big: {size: 70b, answers: 1, tiers: [regional, central]}
          sovereign: {size: 7b, served-in: [eu], answers: 1}
        tenants:
          acme: {served-in: [eu]}
        networks:
          - {name: metro-paris, prefix: 5.9.128.0/17, country: FR, lat: 48.9, lon: 2.4}
          - {name: lab, prefix: 127.0.0.0/8, country: FR, lat: 48.9, lon: 2.4}
          - {name: ny-metro, prefix: 8.8.8.128/25, country: US, lat: 40.7, lon: -74.0}
        """

    static let subnets: [(family: UInt16, prefix: UInt8, address: [UInt8])] = [
        (1, 24, [5, 9, 1]), (1, 24, [5, 9, 200]), (1, 16, [5, 9]), (1, 24, [8, 8, 8]), (1, 25, [8, 8, 8, 128]),
        (1, 24, [127, 0, 0]), (1, 24, [192, 0, 2]), (1, 8, [10]), (2, 48, [0x2A, 0x01, 0x04, 0xF8, 0, 1]),
        (2, 56, [0x20, 0x01, 0x0D, 0xB8, 0, 0, 0]), (2, 120, [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xFF, 0xFF, 5, 9, 1]),
    ]

    static func load(_ directory: String, health: HealthView) throws -> ConfigurationLoader.Loaded {
        var loader = ConfigurationLoader(config: SteeringTests.config(directory))
        loader.health = { _ in health }
        return try loader.loadAll().get()
    }

    /// Every (name, type, subnet) response of a snapshot, in order.
    static func responses(_ snapshot: Snapshot) -> [[UInt8]] {
        let responder = Responder()
        var out: [[UInt8]] = []
        var buffer = [UInt8](repeating: 0, count: 4096)
        for name in ["small", "big", "sovereign", "small.acme", "big.acme", "sovereign.acme"] {
            for type in [RecordType.a, .aaaa, .txt] {
                for subnet in subnets {
                    var edns = EDNS()
                    edns.clientSubnet = ClientSubnet(
                        family: subnet.family, sourcePrefixLength: subnet.prefix, scopePrefixLength: 0,
                        address: subnet.address)
                    var query = Message.query(try! DomainName(name + ".t.example."), type, edns: edns)
                    query.header.id = 7
                    let wire = query.encoded()
                    let length = wire.withUnsafeBytes { input in
                        buffer.withUnsafeMutableBytes { output in
                            responder.respond(to: input, into: output, transport: .udp, snapshot: snapshot)
                        }
                    }
                    out.append(Array(buffer[0..<length]))
                }
            }
        }
        return out
    }

    static func randomHealth(_ random: inout SeededRandom, from: HealthView) -> HealthView {
        var view = from
        let sites = ["fra", "fra2", "par", "ber", "nyc", "dfw"]
        for _ in 0..<Int.random(in: 1...3, using: &random) {
            let site = sites[Int.random(in: 0..<sites.count, using: &random)]
            view.sites[site] = SiteHealth(
                up: Int.random(in: 0..<3, using: &random) != 0, saturated: Int.random(in: 0..<4, using: &random) == 0,
                models: Int.random(in: 0..<5, using: &random) == 0 ? ["big"] : nil,
                unsettled: Int.random(in: 0..<4, using: &random) == 0,
                lastUp: [nil, 100.0, 200.0][Int.random(in: 0..<3, using: &random)])
        }
        return view
    }

    @Test func equalsAFullLoadAfterEveryChange() throws {
        let directory = makeTemporaryDirectory()
        writeFile(directory + "/t.example.zone", SteeringTests.zone)
        writeFile(directory + "/policy.yaml", Self.policy)
        let seed = UInt64.random(in: 1...UInt64.max)
        var random = SeededRandom(state: seed)
        var health = HealthView()
        var loaded = try Self.load(directory, health: health)
        let zonePart = loaded.set.snapshot.zoneData
        for step in 0..<60 {
            health = Self.randomHealth(&random, from: health)
            loaded = loaded.recompiled(health: health)
            let full = try Self.load(directory, health: health)
            #expect(loaded.set.snapshot.zoneData === zonePart, "a health change rebuilt the zone part")
            let got = Self.responses(loaded.set.snapshot)
            let want = Self.responses(full.set.snapshot)
            for (index, (a, b)) in zip(got, want).enumerated() where a != b {
                Issue.record("seed \(seed) step \(step): response \(index) differs from a full load")
                break
            }
        }
    }

    /// A site forced down leaves every answer it was in; answers it was in for no class stay.
    @Test func aForcedDownSiteLeavesOnlyItsAnswers() throws {
        let directory = makeTemporaryDirectory()
        writeFile(directory + "/t.example.zone", SteeringTests.zone)
        writeFile(directory + "/policy.yaml", Self.policy)
        let before = try Self.load(directory, health: HealthView())
        var down = HealthView()
        down.sites["nyc"] = SiteHealth(up: false, lastUp: 100)
        let after = before.recompiled(health: down)
        let old = Self.responses(before.set.snapshot)
        let new = Self.responses(after.set.snapshot)
        let nyc: [[UInt8]] = [[198, 51, 100, 1], [0x20, 0x01, 0x0D, 0xB8, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]]
        func mentions(_ packet: [UInt8]) -> Bool {
            nyc.contains { address in
                (0...(packet.count - address.count)).contains { Array(packet[$0..<$0 + address.count]) == address }
            }
        }
        #expect(old.contains(where: mentions), "nyc is in some answer before")
        #expect(!new.contains(where: mentions), "nyc is in no answer after")
        // Answers without nyc stay as they were (their ECS scope may widen or narrow, as
        // neighbouring classes' answers change).
        for (a, b) in zip(old, new) where !mentions(a) {
            let before = try Message(decoding: a)
            let after = try Message(decoding: b)
            #expect(before.rcode == after.rcode && before.answers == after.answers, "an answer without nyc changed")
        }
        // Only pairs whose answer had nyc in it are decided again: not all of them.
        let pairs =
            (before.steering?.compiler.nameCount ?? 0) * (before.steering?.compiler.geography.locations.count ?? 0)
        let recomputed = after.steering?.lastRecomputed ?? 0
        #expect(recomputed > 0 && recomputed < pairs, "\(recomputed) of \(pairs) pairs decided again")
    }
}
