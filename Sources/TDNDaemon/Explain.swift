import ArgumentParser
import Foundation
import GeoPolicy
import TDNDNS

/// `tdnd explain HOSTNAME --client IP[/LEN]`: the production decision, offline, with its reasons.
struct Explain: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Show how a model hostname is answered for a client: location, every site considered, the answer, TTL and ECS scope.")

    @Argument(help: "A model hostname, e.g. llama-13b.tdn.example or llama-13b.acme.tdn.example.")
    var hostname: String

    @Option(help: "The client: an address, or a subnet as a resolver would send it in ECS (5.9.1.0/24).")
    var client: String

    @Flag(help: "Print JSON.")
    var json = false

    @OptionGroup var options: CommonOptions

    struct Report: Codable {
        struct SiteLine: Codable {
            var site: String
            var kept: Bool
            var reason: String
            var rttMs: Double?
            var score: Double?
        }
        var hostname: String
        var model: String
        var tenant: String?
        var client: String
        var locatedBy: String
        var location: String
        var allowedJurisdictions: [String]?
        var sites: [SiteLine]
        var answerSites: [String]
        var ipv4: [String]
        var ipv6: [String]
        var denied: Bool
        var denial: String?
        var ttl: UInt32
        var ecsScope: Int
    }

    func run() async throws {
        let config: DaemonConfig
        do { config = try options.resolve() } catch {
            report(error)
            throw ExitCode(1)
        }
        guard config.policy != nil else {
            report(ConfigErrors([ConfigError(file: config.file ?? "configuration", line: 0, message: "no policy configured (policy: or --policy)")]))
            throw ExitCode(1)
        }
        let loaded: ConfigurationLoader.Loaded
        switch ConfigurationLoader(config: config).loadAll() {
        case .failure(let errors):
            report(errors)
            throw ExitCode(1)
        case .success(let value): loaded = value
        }
        let policy = loaded.policy!
        guard let prefix = IPPrefix(client) else { throw ValidationError("--client: '\(client)' is not an address or address/length") }
        let zone = policy.zone.lowercased()
        var name = hostname.lowercased()
        if !name.hasSuffix(".") { name += "." }
        guard name.hasSuffix("." + zone) else { throw ValidationError("\(hostname) is not under the policy's zone \(policy.zone)") }
        let labels = name.dropLast(zone.count + 1).split(separator: ".").map(String.init)
        guard let model = policy.models.first(where: { $0.name == labels.first }), labels.count <= 2 else {
            throw ValidationError("\(hostname) is not a model hostname (models: \(policy.models.map(\.name).joined(separator: ", ")))")
        }
        var tenant: Tenant? = nil
        if labels.count == 2 {
            guard let found = policy.tenants.first(where: { $0.name == labels[1] }), found.models?.contains(model.name) ?? true else {
                throw ValidationError("\(labels[1]) is not a tenant of \(model.name)")
            }
            tenant = found
        }
        let located = Locator(policy: policy, geo: loaded.geo).locate(prefix.address)
        let decision = Decider(policy: policy).decide(model: model, tenant: tenant, location: located.location)
        // The scope comes from the compiled table the server answers from.
        var scope = loaded.set.snapshot.classify(prefix.address).scope
        if prefix.length == 0 { scope = 0 }
        let result = Report(
            hostname: name, model: model.name, tenant: tenant?.name, client: prefix.description, locatedBy: located.source,
            location: located.location.description, allowedJurisdictions: decision.allowedJurisdictions,
            sites: decision.trace.map { Report.SiteLine(site: $0.site, kept: $0.kept, reason: $0.reason, rttMs: $0.rttMilliseconds.map(round1), score: $0.score.map(round1)) },
            answerSites: decision.sites, ipv4: decision.ipv4.map(IPPrefix.format), ipv6: decision.ipv6.map(IPPrefix.format),
            denied: decision.denied, denial: decision.denied ? decision.denial.rawValue : nil, ttl: decision.ttl, ecsScope: scope)
        if json {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
            print(String(decoding: try encoder.encode(result), as: UTF8.self))
            return
        }
        print("\(result.hostname)  model \(result.model)\(result.tenant.map { ", tenant \($0)" } ?? "")  client \(result.client)")
        print("located: \(result.location) — \(result.locatedBy)")
        print("allowed jurisdictions: \(result.allowedJurisdictions?.joined(separator: ", ") ?? "any")")
        print("sites, best first:")
        for line in result.sites.filter(\.kept) {
            let rtt = line.rttMs.map { "\($0) ms" } ?? "unknown"
            print("  \(line.site.padding(toLength: 10, withPad: " ", startingAt: 0)) rtt \(rtt.padding(toLength: 10, withPad: " ", startingAt: 0)) score \(line.score ?? 0)  \(line.reason)")
        }
        print("excluded:")
        for line in result.sites.filter({ !$0.kept }) { print("  \(line.site.padding(toLength: 10, withPad: " ", startingAt: 0)) \(line.reason)") }
        if result.denied {
            print("answer: denied (\(result.denial ?? "")): \(result.ipv4 + result.ipv6 == [] ? "no addresses" : (result.ipv4 + result.ipv6).joined(separator: " "))")
        } else {
            print("answer: \(result.answerSites.joined(separator: ", ")) → A \(result.ipv4.joined(separator: " ")) AAAA \(result.ipv6.joined(separator: " "))")
        }
        print("ttl: \(result.ttl)  ecs scope: /\(result.ecsScope)")
    }
}

private func round1(_ value: Double) -> Double { (value * 10).rounded() / 10 }
