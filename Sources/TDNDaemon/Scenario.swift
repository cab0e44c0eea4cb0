import ConfigFile
import Foundation

/// A scenario for `tdnd simulate` (README "Simulator"): the policy and geo database to steer
/// with, the clients' demand, the sites' capacities and what happens when, in simulated
/// seconds. Paths are relative to the scenario file.
struct Scenario: Sendable {
    var file: String
    var policy: String
    var geoip: String
    var seed: UInt64 = 1
    var duration: Double = 1800
    var step: Double = 1
    /// Resolvers in all, split across the location classes by their addresses (at least one
    /// each); each caches every model's answer for its TTL, the first ones expiring at
    /// staggered times.
    var resolvers = 1000
    /// Each (location class, model) pair's resolvers fall into this many shards, each with an
    /// answer of its own (for the budgets, which move demand a shard at a time).
    var shards = 16
    /// Requests per second for each model over the whole network, split across the location
    /// classes by their number of addresses.
    var demand: [String: Double] = [:]
    /// Requests per second each site can serve: by site, else by tier (`edge`, `regional`,
    /// `central`), else `default`.
    var defaultCapacity: Double = 1000
    var capacity: [String: Double] = [:]
    var events: [Event] = []

    struct Event: Sendable {
        enum Kind: Sendable {
            /// The sites stop answering probes and requests.
            case fail([String])
            /// Every site of the jurisdiction fails.
            case failJurisdiction(String)
            /// The model's demand is multiplied by `factor`.
            case flashCrowd(model: String, factor: Double)
            /// The sites stay up but their load figure stops arriving.
            case stale([String])
        }
        var at: Double
        /// How long it lasts; nil: to the end.
        var length: Double?
        var kind: Kind
        /// As written, for the report (`fail fra1 at 600 s`).
        var label: String

        func active(at time: Double) -> Bool { time >= at && length.map { time < at + $0 } ?? true }
    }

    static func load(path: String) -> Result<Scenario, ConfigErrors> {
        ConfigReader.load(path: path, what: "the scenario").flatMap { root in
            var reader = ConfigReader(file: path)
            let scenario = read(root, path: path, &reader)
            if let failure = reader.failure { return .failure(failure) }
            return .success(scenario!)
        }
    }

    private static func read(_ root: ConfigValue?, path: String, _ reader: inout ConfigReader) -> Scenario? {
        guard let root else {
            reader.fail(nil, nil, "the scenario is empty")
            return nil
        }
        let top = reader.entries(
            root, "scenario",
            known: [
                "policy", "geoip", "seed", "duration", "step", "resolvers", "shards", "demand", "capacity", "events",
            ])
        let directory = URL(fileURLWithPath: path).deletingLastPathComponent()
        func relative(_ key: String) -> String {
            guard top[key] != nil else {
                reader.fail(root, key, "missing \(key)")
                return ""
            }
            guard let text = reader.string(top[key], key) else { return "" }
            return text.hasPrefix("/") ? text : directory.appendingPathComponent(text).path
        }
        var scenario = Scenario(file: path, policy: relative("policy"), geoip: relative("geoip"))
        if let seed = reader.integer(top["seed"], "seed", 0...Int.max) { scenario.seed = UInt64(seed) }
        if let duration = reader.number(top["duration"], "duration", 1...604_800) { scenario.duration = duration }
        if let step = reader.number(top["step"], "step", 0.1...60) { scenario.step = step }
        if let resolvers = reader.integer(top["resolvers"], "resolvers", 1...1_000_000) {
            scenario.resolvers = resolvers
        }
        if let shards = reader.integer(top["shards"], "shards", 1...64) { scenario.shards = shards }
        if let demand = top["demand"] {
            for (model, value) in reader.entries(demand, "demand") {
                if let rate = reader.number(value, "demand.\(model)", 0...1e9) { scenario.demand[model] = rate }
            }
        } else {
            reader.fail(root, "demand", "missing demand (requests per second per model)")
        }
        if let capacity = top["capacity"] {
            for (site, value) in reader.entries(capacity, "capacity") {
                guard let rate = reader.number(value, "capacity.\(site)", 0.001...1e9) else { continue }
                if site == "default" { scenario.defaultCapacity = rate } else { scenario.capacity[site] = rate }
            }
        }
        for (index, item) in (top["events"]?.items ?? []).enumerated() {
            if let event = readEvent(item, key: "events[\(index)]", &reader) { scenario.events.append(event) }
        }
        return scenario
    }

    private static func readEvent(_ value: ConfigValue, key: String, _ reader: inout ConfigReader) -> Event? {
        let entries = reader.entries(
            value, key, known: ["at", "for", "fail", "fail-jurisdiction", "flash-crowd", "factor", "stale"])
        guard let at = reader.number(entries["at"], "\(key).at", 0...604_800) else {
            if entries["at"] == nil { reader.fail(value, "\(key).at", "missing at (seconds from the start)") }
            return nil
        }
        let length = reader.number(entries["for"], "\(key).for", 0.001...604_800)
        let kinds = ["fail", "fail-jurisdiction", "flash-crowd", "stale"].filter { entries[$0] != nil }
        guard kinds.count == 1 else {
            reader.fail(value, key, "expected one of fail, fail-jurisdiction, flash-crowd, stale")
            return nil
        }
        let what = kinds[0]
        let kind: Event.Kind
        switch what {
        case "fail":
            guard let sites = reader.strings(entries[what], "\(key).fail") else { return nil }
            kind = .fail(sites)
        case "stale":
            guard let sites = reader.strings(entries[what], "\(key).stale") else { return nil }
            kind = .stale(sites)
        case "fail-jurisdiction":
            guard let name = reader.string(entries[what], "\(key).fail-jurisdiction") else { return nil }
            kind = .failJurisdiction(name)
        default:
            guard let model = reader.string(entries[what], "\(key).flash-crowd") else { return nil }
            guard let factor = reader.number(entries["factor"], "\(key).factor", 0...1000) else {
                if entries["factor"] == nil { reader.fail(value, "\(key).factor", "missing factor") }
                return nil
            }
            kind = .flashCrowd(model: model, factor: factor)
        }
        var label = "\(what) \(entries[what]?.items.compactMap(\.string).joined(separator: ",") ?? "")"
        label += " at \(formatNumber(at)) s" + (length.map { " for \(formatNumber($0)) s" } ?? "")
        return Event(at: at, length: length, kind: kind, label: label)
    }
}
