import ConfigFile
import GeoPolicy
import HealthProbe
import TDNTestSupport
import Testing

@testable import TDNDaemon

/// A policy's probe sections read by HealthProbe, as the daemon loads them: one load reports
/// the policy's and the probes' problems together, at the policy file's lines.
@Suite("Probe settings in the policy")
struct PolicyProbeTests {
    static let base = PolicyFixture.minimal

    static func load(_ text: String) -> (Result<Policy, ConfigErrors>, [String: ProbeSettings]) {
        var settings: [String: ProbeSettings] = [:]
        let result = PolicyLoader.parse(text, file: "policy.yaml") { site, reader in
            settings[site.id] = ProbePlan.settings(of: site, &reader)
        }
        return (result, settings)
    }

    static let cases: [ConfigErrorCase] = [
        ConfigErrorCase(
            label: "probe timeout over interval",
            text: base.replacingOccurrences(
                of: "ipv4: [192.0.2.1]}",
                with: "ipv4: [192.0.2.1], probe: {http: \"http://192.0.2.1/health\", interval: 1, timeout: 2}}"),
            errors: ["policy.yaml:4: sites.fra.probe: timeout is longer than interval"]),
        ConfigErrorCase(
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
        ConfigErrorCase(
            label: "probe URL naming a missing family",
            text: base + "probe-defaults:\n  edge: {http: \"http://{ipv6}:8000/health\"}\n",
            errors: [
                "policy.yaml:4: sites.fra.probe: 'http://{ipv6}:8000/health' names an address family the site has none of"
            ]),
        ConfigErrorCase(
            label: "a probe problem and a policy problem in one load",
            text: base.replacingOccurrences(of: "ipv4: [192.0.2.1]}", with: "ipv4: [192.0.2.1], probe: {rise: 0}}")
                .replacingOccurrences(of: "m: {size: 7b}", with: "m: {size: huge}"),
            errors: [
                "policy.yaml:4: sites.fra.probe.rise: expected a number from 1 to 100",
                "policy.yaml:6: models.m.size: expected a model size such as 7b, 13b or 70b",
            ]),
    ]

    @Test(arguments: cases)
    func errorsNameFileAndLine(_ item: ConfigErrorCase) {
        guard case .failure(let failure) = Self.load(item.text).0 else {
            Issue.record("the policy loaded")
            return
        }
        #expect(failure.errors.map(\.description).sorted() == item.errors.sorted())
    }

    @Test func probeDefaultsPerTierWithTheSitesOwnAddress() throws {
        let text =
            Self.base.replacingOccurrences(of: "ipv4: [192.0.2.1]}", with: "ipv4: [192.0.2.1], probe: {interval: 10}}")
                + """
                probe-defaults:
                  all: {metrics: "http://{ipv4}:8000/metrics", interval: 5, rise: 3}
                  edge: {http: "http://{ipv4}:8000/health", expect: [200, 204], body: ok, models: "http://{ipv4}:8000/v1/models"}
                health: {when-all-down: deny, unsettled-ttl: 3}

                """
        let (result, settings) = Self.load(text)
        let policy = try result.get()
        let probe = try #require(settings["fra"])
        #expect(probe.http == "http://192.0.2.1:8000/health" && probe.metrics == "http://192.0.2.1:8000/metrics")
        #expect(probe.models == "http://192.0.2.1:8000/v1/models" && probe.expect == [200, 204] && probe.body == "ok")
        #expect(
            probe.interval == 10 && probe.rules.rise == 3 && probe.effectiveJitter == 1 && probe.effectiveStale == 30)
        #expect(policy.health.whenAllDown == .deny && policy.health.unsettledTTL == 3)
        #expect(probe.target(site: "fra").rules.staleAfter == 30)
        let (_, none) = Self.load(Self.base)
        #expect(none["fra"]?.isConfigured == false, "no probe settings: not probed")
    }
}
