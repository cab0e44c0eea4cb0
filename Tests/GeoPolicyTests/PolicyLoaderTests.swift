import GeoPolicy
import TDNTestSupport
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

    static let base = PolicyFixture.minimal

    static let cases: [ConfigErrorCase] = [
        ConfigErrorCase(
            label: "unknown top-level key", text: base + "colour: red\n",
            errors: ["policy.yaml:7: policy: unknown key 'colour'"]),
        ConfigErrorCase(label: "YAML syntax", text: "zone: [t.example\n", errors: ["policy.yaml:2: YAML: "]),
        ConfigErrorCase(
            label: "missing zone", text: base.replacingOccurrences(of: "zone: t.example\n", with: ""),
            errors: ["policy.yaml:1: zone: missing (the zone under which model names live)"]),
        ConfigErrorCase(
            label: "unknown jurisdiction of a site",
            text: base.replacingOccurrences(of: "jurisdiction: eu", with: "jurisdiction: eea"),
            errors: ["policy.yaml:4: sites.fra.jurisdiction: unknown jurisdiction 'eea'"]),
        ConfigErrorCase(
            label: "site outside its jurisdiction",
            text: base.replacingOccurrences(of: "country: DE}", with: "country: US}"),
            errors: ["policy.yaml:4: sites.fra: the site is in US, which jurisdiction eu does not list"]),
        ConfigErrorCase(
            label: "site without addresses", text: base.replacingOccurrences(of: ", ipv4: [192.0.2.1]", with: ""),
            errors: ["policy.yaml:4: sites.fra: the site has no addresses (ipv4, ipv6)"]),
        ConfigErrorCase(
            label: "bad address", text: base.replacingOccurrences(of: "192.0.2.1", with: "192.0.2.300"),
            errors: ["policy.yaml:4: sites.fra.ipv4: '192.0.2.300' is not an IPv4 address"]),
        ConfigErrorCase(
            label: "bad tier", text: base.replacingOccurrences(of: "tier: edge", with: "tier: fog"),
            errors: ["policy.yaml:4: sites.fra.tier: tier must be edge, regional or central"]),
        ConfigErrorCase(
            label: "model nobody can serve",
            text: base.replacingOccurrences(of: "m: {size: 7b}", with: "m: {size: 70b}")
                .replacingOccurrences(of: "ipv4: [192.0.2.1]}", with: "ipv4: [192.0.2.1], max-model: 13b}"),
            errors: ["policy.yaml:6: models.m: no site can serve it (tiers, size, sites and served-in leave none)"]),
        ConfigErrorCase(
            label: "model with an unknown site",
            text: base.replacingOccurrences(of: "m: {size: 7b}", with: "m: {size: 7b, sites: [fra, nowhere]}"),
            errors: ["policy.yaml:6: models.m.sites: unknown site 'nowhere'"]),
        ConfigErrorCase(
            label: "rule with an unknown jurisdiction",
            text: base + "rules:\n  - {clients-in: eu, served-in: [mars]}\n",
            errors: ["policy.yaml:8: rules.served-in: unknown jurisdiction 'mars'"]),
        ConfigErrorCase(
            label: "jurisdiction whose clients reach nothing",
            text: base.replacingOccurrences(
                of: "jurisdictions: {eu: [DE]}", with: "jurisdictions: {eu: [DE], us: [US]}")
                + "rules:\n  - {clients-in: us, served-in: [us]}\n",
            errors: ["policy.yaml:8: rules: clients in us can reach no site for any model"]),
        ConfigErrorCase(
            label: "bad network prefix", text: base + "networks:\n  - {prefix: 10.0.0.0/33, country: DE}\n",
            errors: ["policy.yaml:8: networks.prefix: '10.0.0.0/33' is not an address/length prefix"]),
        ConfigErrorCase(
            label: "latency to an unknown site", text: base + "latency:\n  - {from: DE, site: par, rtt-ms: 3}\n",
            errors: ["policy.yaml:8: latency.site: unknown site 'par'"]),
        ConfigErrorCase(
            label: "health section", text: base + "health: {when-all-down: fallback, fallback: [nowhere]}\n",
            errors: ["policy.yaml:7: health.fallback: unknown site 'nowhere'"]),
        ConfigErrorCase(
            label: "fallback without sites", text: base + "health: {when-all-down: fallback}\n",
            errors: ["policy.yaml:7: health: when-all-down fallback needs a fallback list of sites"]),
        ConfigErrorCase(
            label: "several errors at once",
            text: base.replacingOccurrences(of: "tier: edge", with: "tier: fog").replacingOccurrences(
                of: "m: {size: 7b}", with: "m: {size: huge}"),
            errors: [
                "policy.yaml:4: sites.fra.tier: tier must be edge, regional or central",
                "policy.yaml:6: models.m.size: expected a model size such as 7b, 13b or 70b",
            ]),
    ]

    @Test func probeSectionsAreKeptAsWrittenInTheOrderTheyApply() throws {
        let text =
            Self.base.replacingOccurrences(of: "ipv4: [192.0.2.1]}", with: "ipv4: [192.0.2.1], probe: {interval: 10}}")
            + "probe-defaults:\n  all: {interval: 5}\n  edge: {rise: 3}\n  central: {fall: 9}\n"
        let policy = try Fixtures.loadPolicy(text)
        let sections = try #require(policy.sites.first?.probe)
        #expect(sections.map(\.key) == ["probe-defaults.all", "probe-defaults.edge", "sites.fra.probe"])
        #expect(sections.map { $0.value.line } == [8, 9, 4])
        #expect(try Fixtures.loadPolicy().sites.allSatisfy { $0.probe.isEmpty })
    }

    @Test(arguments: cases)
    func errorsNameFileAndLine(_ item: ConfigErrorCase) {
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
