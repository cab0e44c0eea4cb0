import GeoPolicy
import Testing

@Suite("Policy file")
struct PolicyLoaderTests {
    @Test func fixtureLoads() throws {
        let policy = try Fixtures.loadPolicy()
        #expect(policy.zone == "t.example.")
        #expect(policy.sites.map(\.id) == ["ber", "dfw", "fra", "nyc", "par"])
        #expect(policy.models.first { $0.name == "big" }?.size == 70)
        #expect(
            policy.sites.first { $0.id == "fra" }?.ipv6 == [
                [0x20, 0x01, 0x0d, 0xb8] + Array(repeating: 0, count: 11) + [1]
            ])
        #expect(policy.networks.map(\.prefix.description) == ["10.0.0.0/8", "5.9.128.0/17"])
    }

    struct ErrorCase: CustomTestStringConvertible, Sendable {
        var label: String
        var text: String
        var errors: [String]
        var testDescription: String { label }
    }

    static let base = """
        zone: t.example
        jurisdictions: {eu: [DE]}
        sites:
          fra: {tier: edge, location: {lat: 50, lon: 8, country: DE}, jurisdiction: eu, ipv4: [192.0.2.1]}
        models:
          m: {size: 7b}

        """

    static let cases: [ErrorCase] = [
        ErrorCase(
            label: "unknown top-level key", text: base + "colour: red\n",
            errors: ["policy.yaml:7: policy: unknown key 'colour'"]),
        ErrorCase(label: "YAML syntax", text: "zone: [t.example\n", errors: ["policy.yaml:2: YAML: "]),
        ErrorCase(
            label: "missing zone", text: base.replacingOccurrences(of: "zone: t.example\n", with: ""),
            errors: ["policy.yaml:1: zone: missing (the zone under which model names live)"]),
        ErrorCase(
            label: "unknown jurisdiction of a site",
            text: base.replacingOccurrences(of: "jurisdiction: eu", with: "jurisdiction: eea"),
            errors: ["policy.yaml:4: sites.fra.jurisdiction: unknown jurisdiction 'eea'"]),
        ErrorCase(
            label: "site outside its jurisdiction",
            text: base.replacingOccurrences(of: "country: DE}", with: "country: US}"),
            errors: ["policy.yaml:4: sites.fra: the site is in US, which jurisdiction eu does not list"]),
        ErrorCase(
            label: "site without addresses", text: base.replacingOccurrences(of: ", ipv4: [192.0.2.1]", with: ""),
            errors: ["policy.yaml:4: sites.fra: the site has no addresses (ipv4, ipv6)"]),
        ErrorCase(
            label: "bad address", text: base.replacingOccurrences(of: "192.0.2.1", with: "192.0.2.300"),
            errors: ["policy.yaml:4: sites.fra.ipv4: '192.0.2.300' is not an IPv4 address"]),
        ErrorCase(
            label: "bad tier", text: base.replacingOccurrences(of: "tier: edge", with: "tier: fog"),
            errors: ["policy.yaml:4: sites.fra.tier: tier must be edge, regional or central"]),
        ErrorCase(
            label: "model nobody can serve",
            text: base.replacingOccurrences(of: "m: {size: 7b}", with: "m: {size: 70b}")
                .replacingOccurrences(of: "ipv4: [192.0.2.1]}", with: "ipv4: [192.0.2.1], max-model: 13b}"),
            errors: ["policy.yaml:6: models.m: no site can serve it (tiers, size, sites and served-in leave none)"]),
        ErrorCase(
            label: "model with an unknown site",
            text: base.replacingOccurrences(of: "m: {size: 7b}", with: "m: {size: 7b, sites: [fra, nowhere]}"),
            errors: ["policy.yaml:6: models.m.sites: unknown site 'nowhere'"]),
        ErrorCase(
            label: "rule with an unknown jurisdiction",
            text: base + "rules:\n  - {clients-in: eu, served-in: [mars]}\n",
            errors: ["policy.yaml:8: rules.served-in: unknown jurisdiction 'mars'"]),
        ErrorCase(
            label: "jurisdiction whose clients reach nothing",
            text: base.replacingOccurrences(
                of: "jurisdictions: {eu: [DE]}", with: "jurisdictions: {eu: [DE], us: [US]}")
                + "rules:\n  - {clients-in: us, served-in: [us]}\n",
            errors: ["policy.yaml:8: rules: clients in us can reach no site for any model"]),
        ErrorCase(
            label: "bad network prefix", text: base + "networks:\n  - {prefix: 10.0.0.0/33, country: DE}\n",
            errors: ["policy.yaml:8: networks.prefix: '10.0.0.0/33' is not an address/length prefix"]),
        ErrorCase(
            label: "latency to an unknown site", text: base + "latency:\n  - {from: DE, site: par, rtt-ms: 3}\n",
            errors: ["policy.yaml:8: latency.site: unknown site 'par'"]),
        ErrorCase(
            label: "probe timeout over interval",
            text: base.replacingOccurrences(
                of: "ipv4: [192.0.2.1]}",
                with: "ipv4: [192.0.2.1], probe: {http: \"http://192.0.2.1/health\", interval: 1, timeout: 2}}"),
            errors: ["policy.yaml:4: sites.fra.probe: timeout is longer than interval"]),
        ErrorCase(
            label: "probe settings",
            text: base.replacingOccurrences(
                of: "ipv4: [192.0.2.1]}",
                with:
                    "ipv4: [192.0.2.1], probe: {tcp: nohost, http: ftp://x, interval: 2, jitter: 1, low-water: 0.9, high-water: 0.5, expect: [700]}}"
            ),
            errors: [
                "policy.yaml:4: sites.fra.probe.tcp: expected HOST:PORT (IPv6 as [2001:db8::1]:8000)",
                "policy.yaml:4: sites.fra.probe.http: expected an http:// or https:// URL",
                "policy.yaml:4: sites.fra.probe: low-water is above high-water",
                "policy.yaml:4: sites.fra.probe: jitter must be under half the interval",
                "policy.yaml:4: sites.fra.probe.expect: expected HTTP status codes such as 200",
            ]),
        ErrorCase(
            label: "probe URL naming a missing family",
            text: base + "probe-defaults:\n  edge: {http: \"http://{ipv6}:8000/health\"}\n",
            errors: [
                "policy.yaml:4: sites.fra.probe: 'http://{ipv6}:8000/health' names an address family the site has none of"
            ]),
        ErrorCase(
            label: "health section", text: base + "health: {when-all-down: fallback, fallback: [nowhere]}\n",
            errors: ["policy.yaml:7: health.fallback: unknown site 'nowhere'"]),
        ErrorCase(
            label: "fallback without sites", text: base + "health: {when-all-down: fallback}\n",
            errors: ["policy.yaml:7: health: when-all-down fallback needs a fallback list of sites"]),
        ErrorCase(
            label: "several errors at once",
            text: base.replacingOccurrences(of: "tier: edge", with: "tier: fog").replacingOccurrences(
                of: "m: {size: 7b}", with: "m: {size: huge}"),
            errors: [
                "policy.yaml:4: sites.fra.tier: tier must be edge, regional or central",
                "policy.yaml:6: models.m.size: expected a model size such as 7b, 13b or 70b",
            ]),
    ]

    @Test func probeDefaultsPerTierWithTheSitesOwnAddress() throws {
        let text =
            Self.base.replacingOccurrences(of: "ipv4: [192.0.2.1]}", with: "ipv4: [192.0.2.1], probe: {interval: 10}}")
                + """
                probe-defaults:
                  all: {metrics: "http://{ipv4}:8000/metrics", interval: 5, rise: 3}
                  edge: {http: "http://{ipv4}:8000/health", expect: [200, 204], body: ok, models: "http://{ipv4}:8000/v1/models"}
                health: {when-all-down: deny, unsettled-ttl: 3}

                """
        let policy = try Fixtures.loadPolicy(text)
        let probe = try #require(policy.sites.first?.probe)
        #expect(probe.http == "http://192.0.2.1:8000/health" && probe.metrics == "http://192.0.2.1:8000/metrics")
        #expect(probe.models == "http://192.0.2.1:8000/v1/models" && probe.expect == [200, 204] && probe.body == "ok")
        #expect(probe.interval == 10 && probe.rise == 3 && probe.effectiveJitter == 1 && probe.effectiveStale == 30)
        #expect(policy.health.whenAllDown == .deny && policy.health.unsettledTTL == 3)
        #expect(try Fixtures.loadPolicy().sites.allSatisfy { !$0.probe.isConfigured }, "no probe settings: not probed")
    }

    @Test(arguments: cases)
    func errorsNameFileAndLine(_ item: ErrorCase) {
        guard case .failure(let failure) = PolicyLoader.parse(item.text, file: "policy.yaml") else {
            Issue.record("the policy loaded")
            return
        }
        let errors = failure.errors.map(\.description)
        if item.label == "YAML syntax" {
            #expect(errors.count == 1 && errors[0].hasPrefix(item.errors[0]))
        } else {
            #expect(errors.sorted() == item.errors.sorted())
        }
    }
}
