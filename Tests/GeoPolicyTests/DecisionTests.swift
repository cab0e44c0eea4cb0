import GeoPolicy
import TDNTestSupport
import Testing

@Suite("Decisions")
struct DecisionTests {
    struct Case: CustomTestStringConvertible, Sendable {
        var label: String
        var model: String
        var tenant: String? = nil
        var location: Location
        var health: [String: SiteHealth] = [:]
        /// Chosen sites, best first; empty: denied.
        var sites: [String]
        var testDescription: String { label }
    }

    static let cases: [Case] = [
        Case(label: "German client, nearest edge", model: "small", location: Fixtures.frankfurt, sites: ["fra"]),
        Case(label: "French client, nearest edge", model: "small", location: Fixtures.paris, sites: ["par"]),
        Case(label: "US client", model: "small", location: Fixtures.newYork, sites: ["nyc"]),
        Case(label: "70B skips the edge", model: "big", location: Fixtures.frankfurt, sites: ["ber"]),
        Case(label: "70B for the US goes central", model: "big", location: Fixtures.newYork, sites: ["dfw"]),
        Case(
            label: "edge down: next edge", model: "small", location: Fixtures.frankfurt,
            health: ["fra": SiteHealth(up: false)], sites: ["par"]),
        Case(
            label: "EU edges down: spill to regional", model: "small", location: Fixtures.frankfurt,
            health: ["fra": SiteHealth(up: false), "par": SiteHealth(up: false)], sites: ["ber"]),
        Case(
            label: "full edge is skipped while another has room", model: "small", location: Fixtures.frankfurt,
            health: ["fra": SiteHealth(saturated: true)], sites: ["par"]),
        Case(
            label: "all full: still answered, nearest first", model: "small", location: Fixtures.frankfurt,
            health: [
                "fra": SiteHealth(saturated: true), "par": SiteHealth(saturated: true),
                "ber": SiteHealth(saturated: true),
            ], sites: ["fra"]),
        Case(
            label: "model not loaded at the nearest site", model: "small", location: Fixtures.frankfurt,
            health: ["fra": SiteHealth(models: ["big"])], sites: ["par"]),
        // Sovereignty fails closed: US sites are up, but EU clients may not use them.
        Case(
            label: "all EU sites down: denied, never the US", model: "small", location: Fixtures.frankfurt,
            health: ["fra": SiteHealth(up: false), "par": SiteHealth(up: false), "ber": SiteHealth(up: false)],
            sites: []),
        Case(
            label: "70B with the EU regional down: denied", model: "big", location: Fixtures.paris,
            health: ["ber": SiteHealth(up: false)], sites: []),
        // Without a rule for US clients, an EU-sovereign model is served to them from the EU.
        Case(
            label: "EU-sovereign model for a US client", model: "sovereign", location: Fixtures.newYork, sites: ["par"]),
        Case(
            label: "EU-sovereign model for a Japanese client", model: "sovereign", location: Fixtures.tokyo,
            sites: ["fra"]),
        Case(
            label: "EU-only tenant from the US", model: "small", tenant: "acme", location: Fixtures.newYork,
            sites: ["par"]),
        Case(
            label: "EU-only tenant from France", model: "small", tenant: "acme", location: Fixtures.paris,
            sites: ["par"]),
        Case(
            label: "unknown location: only what the policy allows", model: "small", location: .unknown, sites: ["nyc"]),
    ]

    @Test(arguments: cases)
    func decision(_ item: Case) throws {
        let policy = try Fixtures.loadPolicy()
        let model = try #require(policy.models.first { $0.name == item.model })
        let tenant = item.tenant.flatMap { name in policy.tenants.first { $0.name == name } }
        let decision = Decider(policy: policy).decide(
            model: model, tenant: tenant, location: item.location, health: HealthView(sites: item.health))
        #expect(decision.sites == item.sites)
        #expect(decision.denied == item.sites.isEmpty)
        if decision.denied {
            #expect(decision.ttl == 5, "denials carry the short denial TTL")
            #expect(decision.ipv4.isEmpty && decision.ipv6.isEmpty)
        } else {
            #expect(decision.ttl == model.ttl)
            let chosen = policy.sites.filter { item.sites.contains($0.id) }
            #expect(Set(decision.ipv4) == Set(chosen.flatMap(\.ipv4)))
        }
    }

    @Test func whenEverySiteIsDownThePolicyDecides() throws {
        let down: [String: SiteHealth] = [
            "fra": SiteHealth(up: false, lastUp: 100), "par": SiteHealth(up: false, lastUp: 200),
            "ber": SiteHealth(up: false, lastUp: 150),
            "nyc": SiteHealth(up: true),
        ]
        var policy = try Fixtures.loadPolicy()
        let model = try #require(policy.models.first { $0.name == "small" })
        func sites() -> [String] {
            Decider(policy: policy).decide(
                model: model, tenant: nil, location: Fixtures.frankfurt, health: HealthView(sites: down)
            ).sites
        }
        #expect(policy.health.whenAllDown == .lastKnownGood)
        #expect(sites() == ["par"], "the last EU site to go down; never the US one that is up")
        policy.health.whenAllDown = .fallback
        policy.health.fallback = ["nyc", "ber"]
        #expect(sites() == ["ber"], "the fallback within the client's jurisdictions")
        policy.health.whenAllDown = .deny
        #expect(sites() == [])
        // Never up (no last-known-good): denied.
        policy.health.whenAllDown = .lastKnownGood
        let never = HealthView(sites: [
            "fra": SiteHealth(up: false), "par": SiteHealth(up: false), "ber": SiteHealth(up: false),
        ])
        #expect(
            Decider(policy: policy).decide(model: model, tenant: nil, location: Fixtures.frankfurt, health: never)
                .denied)
    }

    @Test func unsettledSitesShortenTheTTL() throws {
        let policy = try Fixtures.loadPolicy()
        let model = try #require(policy.models.first { $0.name == "small" })
        func ttl(_ health: [String: SiteHealth]) -> UInt32 {
            Decider(policy: policy).decide(
                model: model, tenant: nil, location: Fixtures.frankfurt, health: HealthView(sites: health)
            ).ttl
        }
        #expect(ttl([:]) == 30)
        #expect(ttl(["fra": SiteHealth(unsettled: true)]) == 5, "the answered site may change soon")
        #expect(ttl(["fra": SiteHealth(up: false), "par": SiteHealth(unsettled: true)]) == 5)
        #expect(ttl(["par": SiteHealth(unsettled: true)]) == 30, "a site ranked behind the answer does not matter")
        #expect(ttl(["fra": SiteHealth(up: false, unsettled: true)]) == 5, "a better site that may come back soon does")
    }

    @Test func denialEndpointIsInTheClientsJurisdiction() throws {
        // With a rule keeping US clients in the US, the EU-sovereign model is denied to them.
        var text = Fixtures.policy.replacingOccurrences(
            of: "    served-in: [eu]\nunknown",
            with: "    served-in: [eu]\n  - clients-in: us\n    served-in: [us]\nunknown")
        text = text.replacingOccurrences(
            of: "denial: {mode: empty, ttl: 5}",
            with: """
                denial:
                  mode: endpoint
                  ttl: 7
                  endpoints:
                    eu: {ipv4: [192.0.2.250]}
                    us: {ipv4: [198.51.100.250]}
                """)
        text += "\n"
        let policy = try Fixtures.loadPolicy(text)
        let sovereign = try #require(policy.models.first { $0.name == "sovereign" })
        let decision = Decider(policy: policy).decide(model: sovereign, tenant: nil, location: Fixtures.newYork)
        #expect(decision.denied && decision.ipv4 == [[198, 51, 100, 250]] && decision.ttl == 7)
        #expect(decision.allowedJurisdictions == [])
    }

    @Test func latencyMapOverridesDistance() throws {
        let text = Fixtures.policy + "\nlatency:\n  - {from: DE, site: par, rtt-ms: 1}\n"
        let policy = try Fixtures.loadPolicy(text)
        let small = try #require(policy.models.first { $0.name == "small" })
        #expect(
            Decider(policy: policy).decide(model: small, tenant: nil, location: Fixtures.frankfurt).sites == ["par"])
    }

    @Test func nearEqualSitesShareClientsByWeight() throws {
        // Two sites at the same place: each location prefers one, in proportion to weight 3:1.
        var text = Fixtures.policy.replacingOccurrences(of: "near-equal-ms: 0", with: "near-equal-ms: 5")
        text = text.replacingOccurrences(
            of: "par: {tier: edge, location: {lat: 48.9, lon: 2.4, country: FR}",
            with: "par: {weight: 300, tier: edge, location: {lat: 50.1, lon: 8.7, country: DE}")
        text = text.replacingOccurrences(of: "jurisdictions:\n  eu: [DE, FR]", with: "jurisdictions:\n  eu: [DE, FR]")
        let policy = try Fixtures.loadPolicy(text)
        let small = try #require(policy.models.first { $0.name == "small" })
        let decider = Decider(policy: policy)
        var first: [String: Int] = [:]
        for index in 0..<400 {
            let place = Location(
                country: "DE",
                coordinates: Coordinates(
                    latitude: 50.1 + Double(index % 20) * 0.01, longitude: 8.7 + Double(index / 20) * 0.01))
            first[decider.decide(model: small, tenant: nil, location: place).sites[0], default: 0] += 1
        }
        let par = first["par", default: 0]
        #expect(par > 240 && par < 360, "weight 300 against 100 should win about 3/4 of places, got \(first)")
    }
}

/// For random health and capacity states, no decision ever leaves the allowed jurisdictions.
@Suite("Sovereignty", .cpuBound)
struct SovereigntyTests {
    @Test func neverOutsideTheAllowedJurisdictions() throws {
        let seed = UInt64.random(in: 1...UInt64.max)
        var random = SeededRandom(state: seed)
        let policy = try Fixtures.loadPolicy()
        let decider = Decider(policy: policy)
        let jurisdictionOf = Dictionary(uniqueKeysWithValues: policy.sites.map { ($0.id, $0.jurisdiction) })
        let places: [Location] = [Fixtures.frankfurt, Fixtures.paris, Fixtures.newYork, Fixtures.tokyo, .unknown]
        for round in 0..<3000 {
            var health = HealthView()
            for site in policy.sites {
                health.sites[site.id] = SiteHealth(
                    up: Bool.random(using: &random), saturated: Bool.random(using: &random),
                    models: Bool.random(using: &random)
                        ? nil : Set(policy.models.map(\.name).filter { _ in Bool.random(using: &random) }))
            }
            let place = places[Int.random(in: 0..<places.count, using: &random)]
            for model in policy.models {
                for tenant in [nil] + policy.tenants.map(Optional.some) {
                    let decision = decider.decide(model: model, tenant: tenant, location: place, health: health)
                    // The oracle, written independently of the decider.
                    var allowed: Set<String> = ["eu", "us"]
                    if place.country == "DE" || place.country == "FR" { allowed.formIntersection(["eu"]) }
                    if place.country == nil { allowed.formIntersection(["us"]) }
                    if model.name == "sovereign" { allowed.formIntersection(["eu"]) }
                    if tenant?.name == "acme" { allowed.formIntersection(["eu"]) }
                    for site in decision.sites {
                        #expect(
                            allowed.contains(jurisdictionOf[site]!),
                            "seed \(seed) round \(round): \(site) for \(place) \(model.name) \(tenant?.name ?? "-")")
                    }
                    for site in decision.sites {
                        #expect(health[site].up, "seed \(seed) round \(round): down site \(site) chosen")
                    }
                }
            }
        }
    }
}
