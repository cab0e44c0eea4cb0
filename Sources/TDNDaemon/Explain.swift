import ArgumentParser
import ConfigFile
import Foundation
import GeoPolicy
import TDNDNS

/// `tdnd explain HOSTNAME --client IP[/LEN]`: the production decision, offline, with its reasons.
struct Explain: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract:
            "Show how a model hostname is answered for a client: location, every site considered, the answer, TTL and ECS scope."
    )

    @Argument(help: "A model hostname, e.g. llama-13b.tdn.example or llama-13b.acme.tdn.example.")
    var hostname: String

    @Option(help: "The client: an address, or a subnet as a resolver would send it in ECS (5.9.1.0/24).")
    var client: String

    @OptionGroup var output: OutputOptions

    @OptionGroup var options: CommonOptions

    func run() async throws {
        let config = try options.resolveOrExit()
        guard config.policy != nil else {
            report(
                ConfigErrors([
                    ConfigError(
                        file: config.file ?? "configuration", line: 0,
                        message: "no policy configured (policy: or --policy)")
                ]))
            throw ExitCode(1)
        }
        let loaded = try TDNDaemon.loaded(ConfigurationLoader(config: config).loadAll())
        let result: ExplainReport
        do { result = try ExplainReport.make(loaded: loaded, hostname: hostname, client: client) } catch {
            throw ValidationError(error.description)
        }
        if output.json {
            print(String(decoding: try result.json(), as: UTF8.self))
            return
        }
        print(result.text)
    }
}

/// The decision for one hostname and client, with its reasons: `tdnd explain` and the status
/// server's `/explain` give the same report.
struct ExplainReport: Codable, Sendable {
    struct SiteLine: Codable, Sendable {
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
    /// The answer-share budgets' part (the live server's `/explain` only).
    var budget: BudgetLine?

    struct BudgetLine: Codable, Sendable {
        /// The client's shard of its location class (a hash of its /24 or /56).
        var shard: Int
        /// What the data plane saw of this name from the class: queries per second, each
        /// counted as the TTL it was answered with (the demand unit budgets weigh).
        var demand: Double
        /// The shard's answer, where the budgets changed it.
        var answerSites: [String]?
        var ttl: UInt32?
        var reason: String
        /// The allowed sites, best first: fresh load figure, the share of all demand the last
        /// pass gave each, and the share each may take below its low-water mark.
        var sites: [BudgetSite]
    }

    struct BudgetSite: Codable, Sendable {
        var site: String
        var load: Double?
        var assignedShare: Double?
        var budgetShare: Double?
    }

    struct Failure: Error, CustomStringConvertible {
        let description: String
    }

    /// Runs the production decision: the same locator, decider and compiled table as the server.
    /// With `loads` (the live server's fresh load figures), the budgets' part too; the caller
    /// holds the snapshot lock (the steering's budget state is read).
    static func make(
        loaded: ConfigurationLoader.Loaded, hostname: String, client: String, loads: [String: Double]? = nil
    ) throws(Failure) -> ExplainReport {
        guard let policy = loaded.policy else { throw Failure(description: "no policy configured") }
        guard let prefix = IPPrefix(client) else {
            throw Failure(description: "client: '\(client)' is not an address or address/length")
        }
        let zone = policy.zone.lowercased()
        var name = hostname.lowercased()
        if !name.hasSuffix(".") { name += "." }
        guard name.hasSuffix("." + zone) else {
            throw Failure(description: "\(hostname) is not under the policy's zone \(policy.zone)")
        }
        let labels = name.dropLast(zone.count + 1).split(separator: ".").map(String.init)
        guard let model = policy.models.first(where: { $0.name == labels.first }), labels.count <= 2 else {
            throw Failure(
                description:
                    "\(hostname) is not a model hostname (models: \(policy.models.map(\.name).joined(separator: ", ")))"
            )
        }
        var tenant: Tenant? = nil
        if labels.count == 2 {
            guard let found = policy.tenants.first(where: { $0.name == labels[1] }),
                found.models?.contains(model.name) ?? true
            else {
                throw Failure(description: "\(labels[1]) is not a tenant of \(model.name)")
            }
            tenant = found
        }
        let located = Locator(policy: policy, geo: loaded.geo).locate(prefix.address)
        let decision = Decider(policy: policy).decide(
            model: model, tenant: tenant, location: located.location, health: loaded.health)
        // The scope comes from the compiled table the server answers from.
        let scope = prefix.length == 0 ? 0 : loaded.set.snapshot.classify(prefix.address).scope
        var budget: BudgetLine? = nil
        if let loads, let steering = loaded.steering {
            budget = budgetLine(
                steering: steering, labels: labels, model: model, location: located.location, address: prefix.address,
                decision: decision, loads: loads)
        }
        return ExplainReport(
            hostname: name, model: model.name, tenant: tenant?.name, client: prefix.description,
            locatedBy: located.source,
            location: located.location.description, allowedJurisdictions: decision.allowedJurisdictions,
            sites: decision.trace.map {
                SiteLine(
                    site: $0.site, kept: $0.kept, reason: $0.reason, rttMs: $0.rttMilliseconds.map(round1),
                    score: $0.score.map(round1))
            },
            answerSites: decision.sites, ipv4: decision.ipv4.map(IPPrefix.format),
            ipv6: decision.ipv6.map(IPPrefix.format),
            denied: decision.denied, denial: decision.denied ? decision.denial.rawValue : nil, ttl: decision.ttl,
            ecsScope: scope, budget: budget)
    }

    private static func budgetLine(
        steering: ConfigurationLoader.Steering, labels: [String], model: Model, location: Location, address: [UInt8],
        decision: Decision, loads: [String: Double]
    ) -> BudgetLine? {
        let plan = steering.compiler.plan()
        guard let name = plan.names.firstIndex(where: { $0.labels == labels }),
            let locationClass = plan.locations.firstIndex(of: location.quantized)
        else { return nil }
        let high = address.prefix(8).reduce(UInt64(0)) { $0 << 8 | UInt64($1) } << (address.count == 4 ? 32 : 0)
        let shard = SteeringTable.shard(high: high, isIPv6: address.count == 16)
        let rate = steering.demand.rates[steering.names[name].description].map { $0[locationClass] } ?? 0
        let figures = steering.budgetFigures
        let sites = decision.trace.filter(\.kept).map { line in
            BudgetSite(
                site: line.site, load: loads[line.site].map(round3),
                assignedShare: figures.assignedShare[line.site].map(round3),
                budgetShare: figures.budgetShare[line.site].map(round3))
        }
        var line = BudgetLine(
            shard: shard, demand: round3(rate), reason: "",
            sites: sites)
        // The best allowed site by score (the compiler sets a full one last; budgets do not).
        let lead = decision.trace.filter(\.kept).min { ($0.score ?? 0) < ($1.score ?? 0) }?.site
        let choice = steering.budgetChoices[.init(name: name, location: locationClass, shard: shard)]
        let score = Dictionary(decision.trace.compactMap { line in line.score.map { (line.site, $0) } }) { a, _ in a }
        switch (choice, lead) {
        case (let choice?, let lead?) where choice.sites.first != lead:
            let chosen = choice.sites.first ?? ""
            let added = (score[chosen] ?? 0) - (score[lead] ?? 0)
            line.answerSites = choice.sites
            line.ttl = choice.ttl
            line.reason =
                "\(lead) has no room for this shard in its budget (load \(loads[lead].map { "\(round3($0))" } ?? "unknown")): it goes to \(chosen), \(round1(added)) ms farther, the allowed site with room that adds least latency"
        case (let choice?, _) where choice.ttl < model.ttl:
            line.answerSites = choice.sites
            line.ttl = choice.ttl
            line.reason =
                "\(choice.sites.first ?? "") is near its budget (between its water marks): a short TTL while the budget is tight"
        case (let choice?, _):
            line.answerSites = choice.sites
            line.ttl = choice.ttl
            line.reason = "within budget at \(choice.sites.first ?? "")"
        case (nil, let lead?) where loads[lead] == nil:
            line.reason = "\(lead) reports no fresh load figure: the compiler's answer stands"
        case (nil, _) where rate == 0:
            line.reason = "no queries seen from this class yet: the compiler's answer stands"
        default:
            line.reason = "within budget: the compiler's answer stands"
        }
        return line
    }

    func json() throws -> Data {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        return try encoder.encode(self)
    }

    var text: String {
        func pad(_ text: String) -> String { text.padding(toLength: 10, withPad: " ", startingAt: 0) }
        var lines = [
            "\(hostname)  model \(model)\(tenant.map { ", tenant \($0)" } ?? "")  client \(client)",
            "located: \(location) — \(locatedBy)",
            "allowed jurisdictions: \(allowedJurisdictions?.joined(separator: ", ") ?? "any")",
            "sites, best first:",
        ]
        for line in sites where line.kept {
            lines.append(
                "  \(pad(line.site)) rtt \(pad(line.rttMs.map { "\($0) ms" } ?? "unknown")) score \(line.score ?? 0)  \(line.reason)"
            )
        }
        lines.append("excluded:")
        for line in sites where !line.kept { lines.append("  \(pad(line.site)) \(line.reason)") }
        if denied {
            let addresses = ipv4 + ipv6
            lines.append(
                "answer: denied (\(denial ?? "")): \(addresses.isEmpty ? "no addresses" : addresses.joined(separator: " "))"
            )
        } else {
            lines.append(
                "answer: \(answerSites.joined(separator: ", ")) → A \(ipv4.joined(separator: " ")) AAAA \(ipv6.joined(separator: " "))"
            )
        }
        lines.append("ttl: \(ttl)  ecs scope: /\(ecsScope)")
        if let budget {
            lines.append(
                "budgets: shard \(budget.shard), class demand \(budget.demand) (queries × TTL per second)"
            )
            for site in budget.sites {
                lines.append(
                    "  \(pad(site.site)) load \(site.load.map { "\($0)" } ?? "unknown")  given \(site.assignedShare.map { "\($0)" } ?? "-")  budget \(site.budgetShare.map { "\($0)" } ?? "-")"
                )
            }
            if let sites = budget.answerSites {
                lines.append("budget answer: \(sites.joined(separator: ", ")) ttl \(budget.ttl ?? 0)")
            }
            lines.append("why: \(budget.reason)")
        }
        return lines.joined(separator: "\n")
    }
}

private func round1(_ value: Double) -> Double { (value * 10).rounded() / 10 }
private func round3(_ value: Double) -> Double { (value * 1000).rounded() / 1000 }
