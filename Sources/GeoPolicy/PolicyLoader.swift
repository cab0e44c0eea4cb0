import Yams

/// Reads and checks a policy file; every problem is reported, each as `file:line: message`.
public enum PolicyLoader {
    public static func load(path: String) -> Result<Policy, PolicyErrors> {
        guard let text = readText(path) else {
            return .failure(PolicyErrors([PolicyError(file: path, line: 0, message: "cannot read the policy file")]))
        }
        return parse(text, file: path)
    }

    public static func parse(_ text: String, file: String) -> Result<Policy, PolicyErrors> {
        var reader = Reader(file: file)
        let root: Node?
        do {
            root = try Yams.compose(yaml: text)
        } catch let error as YamlError {
            var line = 0
            switch error {
            case .scanner(_, _, let mark, _), .parser(_, _, let mark, _), .composer(_, _, let mark, _): line = mark.line
            default: break
            }
            return .failure(PolicyErrors([PolicyError(file: file, line: line, message: "YAML: \(error)")]))
        } catch {
            return .failure(PolicyErrors([PolicyError(file: file, line: 0, message: "YAML: \(error)")]))
        }
        guard let root, root.mapping != nil else {
            return .failure(
                PolicyErrors([
                    PolicyError(
                        file: file, line: root?.mark?.line ?? 0,
                        message: "expected a mapping with zone, sites and models")
                ]))
        }
        let policy = reader.policy(root)
        return reader.errors.isEmpty ? .success(policy) : .failure(PolicyErrors(reader.errors))
    }
}

/// Walks the YAML nodes, building the policy and collecting errors with line numbers.
struct Reader {
    let file: String
    var errors: [PolicyError] = []

    init(file: String) { self.file = file }

    mutating func fail(_ node: Node?, _ message: String) {
        errors.append(PolicyError(file: file, line: node?.mark?.line ?? 0, message: message))
    }

    /// The entries of a mapping, complaining about keys not in `known`.
    mutating func entries(_ node: Node, _ context: String, known: Set<String>) -> [String: Node] {
        guard let mapping = node.mapping else {
            fail(node, "\(context): expected a mapping")
            return [:]
        }
        var result: [String: Node] = [:]
        for (key, value) in mapping {
            let name = key.string ?? ""
            if !known.isEmpty && !known.contains(name) {
                fail(key, "\(context): unknown key '\(name)'")
                continue
            }
            result[name] = value
        }
        return result
    }

    mutating func string(_ node: Node?, _ context: String) -> String? {
        guard let node else { return nil }
        guard let text = node.string, !text.isEmpty else {
            fail(node, "\(context): expected text")
            return nil
        }
        return text
    }

    mutating func strings(_ node: Node?, _ context: String) -> [String]? {
        guard let node else { return nil }
        let items = node.sequence.map { Array($0) } ?? [node]
        var result: [String] = []
        for item in items {
            if let text = item.string, !text.isEmpty {
                result.append(text)
            } else {
                fail(item, "\(context): expected a list of names")
            }
        }
        return result
    }

    mutating func number(_ node: Node?, _ context: String, _ range: ClosedRange<Double>) -> Double? {
        guard let node else { return nil }
        guard let value = node.float ?? node.int.map(Double.init), range.contains(value) else {
            fail(
                node,
                "\(context): expected a number from \(formatNumber(range.lowerBound)) to \(formatNumber(range.upperBound))"
            )
            return nil
        }
        return value
    }

    mutating func addresses(_ node: Node?, _ context: String, family: Int) -> [[UInt8]] {
        guard let node else { return [] }
        var result: [[UInt8]] = []
        for text in strings(node, context) ?? [] {
            if let bytes = IPPrefix.parseAddress(text), bytes.count == family {
                result.append(bytes)
            } else {
                fail(node, "\(context): '\(text)' is not an IPv\(family == 4 ? 4 : 6) address")
            }
        }
        return result
    }

    /// `13b`, `70B`, `7`, `1.5t`: billions of parameters.
    mutating func modelSize(_ node: Node?, _ context: String) -> Double? {
        guard let node else { return nil }
        let text = (node.string ?? "").lowercased()
        var scale = 1.0
        var digits = Substring(text)
        if text.hasSuffix("b") {
            digits = digits.dropLast()
        } else if text.hasSuffix("t") {
            digits = digits.dropLast()
            scale = 1000
        } else if text.hasSuffix("m") {
            digits = digits.dropLast()
            scale = 0.001
        }
        guard let value = Double(digits), value > 0 else {
            fail(node, "\(context): expected a model size such as 7b, 13b or 70b")
            return nil
        }
        return value * scale
    }

    mutating func tier(_ node: Node?, _ context: String) -> Tier? {
        guard let node else { return nil }
        guard let text = node.string, let tier = Tier(rawValue: text) else {
            fail(node, "\(context): tier must be edge, regional or central")
            return nil
        }
        return tier
    }

    mutating func country(_ node: Node?, _ context: String) -> String? {
        guard let text = string(node, context) else { return nil }
        guard text.count == 2, text.allSatisfy({ $0.isASCII && $0.isUppercase }) else {
            fail(node, "\(context): '\(text)' is not an ISO 3166 country code such as DE")
            return nil
        }
        return text
    }

    // MARK: - The policy

    mutating func policy(_ root: Node) -> Policy {
        let top = entries(
            root, "policy",
            known: [
                "zone", "jurisdictions", "rules", "sites", "models", "tenants", "networks", "latency",
                "unknown-location", "denial", "tier-penalty-ms", "near-equal-ms", "probe-defaults", "health",
            ])
        var policy = Policy(file: file, zone: "")
        if let zone = string(top["zone"], "zone") {
            policy.zone = zone.hasSuffix(".") ? zone : zone + "."
        } else if top["zone"] == nil {
            fail(root, "zone: missing (the zone under which model names live)")
        }
        if let node = top["jurisdictions"] {
            for (name, value) in entries(node, "jurisdictions", known: []) {
                var countries: Set<String> = []
                for code in strings(value, "jurisdictions.\(name)") ?? [] {
                    if code.count == 2 && code.allSatisfy({ $0.isASCII && $0.isUppercase }) {
                        countries.insert(code)
                    } else {
                        fail(value, "jurisdictions.\(name): '\(code)' is not an ISO 3166 country code")
                    }
                }
                policy.jurisdictions[name] = countries
            }
        }
        func knownJurisdictions(_ names: [String]?, _ node: Node?, _ context: String) -> [String]? {
            guard let names else { return nil }
            for name in names where policy.jurisdictions[name] == nil {
                fail(node, "\(context): unknown jurisdiction '\(name)'")
            }
            return names
        }
        for item in top["rules"]?.sequence.map({ Array($0) }) ?? [] {
            let fields = entries(item, "rules", known: ["clients-in", "served-in"])
            guard let clients = string(fields["clients-in"], "rules.clients-in"),
                let served = strings(fields["served-in"], "rules.served-in")
            else {
                fail(item, "rules: each rule needs clients-in and served-in")
                continue
            }
            _ = knownJurisdictions([clients], fields["clients-in"], "rules.clients-in")
            _ = knownJurisdictions(served, fields["served-in"], "rules.served-in")
            policy.rules.append(SovereigntyRule(clientsIn: clients, servedIn: served, line: item.mark?.line ?? 0))
        }
        var probeDefaults: [Tier: ProbeSettings] = [:]
        if let node = top["probe-defaults"] {
            let byTier = entries(node, "probe-defaults", known: Set(["all"] + Tier.allCases.map(\.rawValue)))
            let all = byTier["all"].map { probe($0, "probe-defaults.all", base: ProbeSettings()) } ?? ProbeSettings()
            for tier in Tier.allCases {
                probeDefaults[tier] =
                    byTier[tier.rawValue].map { probe($0, "probe-defaults.\(tier.rawValue)", base: all) } ?? all
            }
        }
        if let node = top["sites"] {
            for (id, value) in entries(node, "sites", known: []) {
                if let site = site(id, value, policy, probeDefaults: probeDefaults) { policy.sites.append(site) }
            }
            policy.sites.sort { $0.id < $1.id }
        } else {
            fail(root, "sites: missing")
        }
        if let node = top["models"] {
            for (name, value) in entries(node, "models", known: []) {
                let context = "models.\(name)"
                let fields = entries(value, context, known: ["size", "tiers", "sites", "ttl", "answers", "served-in"])
                var model = Model(
                    name: name, size: 1, tiers: Tier.allCases, sites: nil, ttl: 30, answers: 2, servedIn: nil,
                    line: value.mark?.line ?? 0)
                if let size = modelSize(fields["size"], "\(context).size") {
                    model.size = size
                } else if fields["size"] == nil {
                    fail(value, "\(context): size is missing")
                }
                if let list = fields["tiers"] {
                    model.tiers = (list.sequence.map { Array($0) } ?? [list]).compactMap {
                        tier($0, "\(context).tiers")
                    }
                }
                if let ids = strings(fields["sites"], "\(context).sites") {
                    for id in ids where !policy.sites.contains(where: { $0.id == id }) {
                        fail(fields["sites"], "\(context).sites: unknown site '\(id)'")
                    }
                    model.sites = ids
                }
                if let ttl = number(fields["ttl"], "\(context).ttl", 0...86400) { model.ttl = UInt32(ttl) }
                if let answers = number(fields["answers"], "\(context).answers", 1...16) {
                    model.answers = Int(answers)
                }
                model.servedIn = knownJurisdictions(
                    strings(fields["served-in"], "\(context).served-in"), fields["served-in"], "\(context).served-in")
                if !name.allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "-") }) {
                    fail(value, "\(context): a model name must be one DNS label (letters, digits, '-')")
                }
                policy.models.append(model)
            }
            policy.models.sort { $0.name < $1.name }
        } else {
            fail(root, "models: missing")
        }
        if let node = top["tenants"] {
            for (name, value) in entries(node, "tenants", known: []) {
                let context = "tenants.\(name)"
                let fields = entries(value, context, known: ["served-in", "models"])
                var tenant = Tenant(name: name, servedIn: nil, models: nil, line: value.mark?.line ?? 0)
                tenant.servedIn = knownJurisdictions(
                    strings(fields["served-in"], "\(context).served-in"), fields["served-in"], "\(context).served-in")
                if let models = strings(fields["models"], "\(context).models") {
                    for model in models where !policy.models.contains(where: { $0.name == model }) {
                        fail(fields["models"], "\(context).models: unknown model '\(model)'")
                    }
                    tenant.models = models
                }
                policy.tenants.append(tenant)
            }
            policy.tenants.sort { $0.name < $1.name }
        }
        for item in top["networks"]?.sequence.map({ Array($0) }) ?? [] {
            let fields = entries(item, "networks", known: ["name", "prefix", "country", "continent", "lat", "lon"])
            guard let text = string(fields["prefix"], "networks.prefix") else {
                fail(item, "networks: each network needs a prefix")
                continue
            }
            guard let prefix = IPPrefix(text) else {
                fail(fields["prefix"], "networks.prefix: '\(text)' is not an address/length prefix")
                continue
            }
            guard let country = country(fields["country"], "networks.country") else {
                if fields["country"] == nil { fail(item, "networks: \(text) needs a country") }
                continue
            }
            var coordinates: Coordinates? = nil
            if let lat = number(fields["lat"], "networks.lat", -90...90),
                let lon = number(fields["lon"], "networks.lon", -180...180)
            {
                coordinates = Coordinates(latitude: lat, longitude: lon)
            }
            policy.networks.append(
                OperatorNetwork(
                    name: string(fields["name"], "networks.name") ?? text, prefix: prefix, country: country,
                    continent: string(fields["continent"], "networks.continent"), coordinates: coordinates,
                    line: item.mark?.line ?? 0))
        }
        for item in top["latency"]?.sequence.map({ Array($0) }) ?? [] {
            let fields = entries(item, "latency", known: ["from", "site", "rtt-ms"])
            guard let from = string(fields["from"], "latency.from"), let site = string(fields["site"], "latency.site"),
                let rtt = number(fields["rtt-ms"], "latency.rtt-ms", 0...10000)
            else {
                fail(item, "latency: each entry needs from, site and rtt-ms")
                continue
            }
            if !policy.sites.contains(where: { $0.id == site }) {
                fail(fields["site"], "latency.site: unknown site '\(site)'")
            }
            let isCountry = from.count == 2 && from.allSatisfy { $0.isUppercase }
            if !isCountry && !policy.networks.contains(where: { $0.name == from }) {
                fail(fields["from"], "latency.from: '\(from)' is neither a country code nor a network name")
            }
            policy.latency.append(LatencyEntry(from: from, site: site, rttMilliseconds: rtt))
        }
        if let node = top["unknown-location"] {
            let fields = entries(node, "unknown-location", known: ["served-in"])
            policy.unknownLocationServedIn =
                knownJurisdictions(
                    strings(fields["served-in"], "unknown-location.served-in"), fields["served-in"],
                    "unknown-location.served-in") ?? []
        }
        if let node = top["denial"] {
            let fields = entries(node, "denial", known: ["mode", "ttl", "endpoints"])
            if let text = string(fields["mode"], "denial.mode") {
                if let mode = Denial.Mode(rawValue: text) {
                    policy.denial.mode = mode
                } else {
                    fail(fields["mode"], "denial.mode: expected empty, endpoint or servfail")
                }
            }
            if let ttl = number(fields["ttl"], "denial.ttl", 0...3600) { policy.denial.ttl = UInt32(ttl) }
            if let endpoints = fields["endpoints"] {
                for (name, value) in entries(endpoints, "denial.endpoints", known: []) {
                    _ = knownJurisdictions([name], value, "denial.endpoints")
                    let parts = entries(value, "denial.endpoints.\(name)", known: ["ipv4", "ipv6"])
                    policy.denial.endpoints[name] = Denial.Endpoint(
                        ipv4: addresses(parts["ipv4"], "denial.endpoints.\(name).ipv4", family: 4),
                        ipv6: addresses(parts["ipv6"], "denial.endpoints.\(name).ipv6", family: 16))
                }
            }
            if policy.denial.mode == .endpoint && policy.denial.endpoints.isEmpty {
                fail(node, "denial: mode endpoint needs endpoints per jurisdiction")
            }
        }
        if let node = top["tier-penalty-ms"] {
            for (name, value) in entries(node, "tier-penalty-ms", known: Set(Tier.allCases.map(\.rawValue))) {
                if let tier = Tier(rawValue: name), let ms = number(value, "tier-penalty-ms.\(name)", 0...10000) {
                    policy.tierPenaltyMilliseconds[tier] = ms
                }
            }
        }
        if let ms = number(top["near-equal-ms"], "near-equal-ms", 0...1000) { policy.nearEqualMilliseconds = ms }
        if let node = top["health"] {
            let fields = entries(node, "health", known: ["when-all-down", "fallback", "unsettled-ttl"])
            if let text = string(fields["when-all-down"], "health.when-all-down") {
                if let mode = AllDownMode(rawValue: text) {
                    policy.health.whenAllDown = mode
                } else {
                    fail(fields["when-all-down"], "health.when-all-down: expected last-known-good, fallback or deny")
                }
            }
            if let ids = strings(fields["fallback"], "health.fallback") {
                for id in ids where !policy.sites.contains(where: { $0.id == id }) {
                    fail(fields["fallback"], "health.fallback: unknown site '\(id)'")
                }
                policy.health.fallback = ids
            }
            if policy.health.whenAllDown == .fallback && policy.health.fallback.isEmpty {
                fail(node, "health: when-all-down fallback needs a fallback list of sites")
            }
            if let ttl = number(fields["unsettled-ttl"], "health.unsettled-ttl", 0...86400) {
                policy.health.unsettledTTL = UInt32(ttl)
            }
        }
        if errors.isEmpty { checkReachability(policy, root) }
        return policy
    }

    /// Probe settings: `base` with the keys of `node` applied.
    mutating func probe(_ node: Node, _ context: String, base: ProbeSettings) -> ProbeSettings {
        var probe = base
        let settings = entries(
            node, context,
            known: [
                "http", "expect", "body", "tcp", "metrics", "capacity", "high-water", "low-water", "models",
                "interval", "timeout", "jitter", "stale", "rise", "fall",
            ])
        for key in ["http", "metrics", "models"] {
            if let url = string(settings[key], "\(context).\(key)") {
                if !(url.hasPrefix("http://") || url.hasPrefix("https://")) {
                    fail(settings[key], "\(context).\(key): expected an http:// or https:// URL")
                }
                switch key {
                case "http": probe.http = url
                case "metrics": probe.metrics = url
                default: probe.models = url
                }
            }
        }
        if let node = settings["expect"] {
            let items = node.sequence.map { Array($0) } ?? [node]
            var codes: [Int] = []
            for item in items {
                if let code = item.int, (100...599).contains(code) {
                    codes.append(code)
                } else {
                    fail(item, "\(context).expect: expected HTTP status codes such as 200")
                }
            }
            probe.expect = codes
        }
        if let text = string(settings["body"], "\(context).body") { probe.body = text }
        if let target = string(settings["tcp"], "\(context).tcp") {
            let port = target.split(separator: ":").last.flatMap { Int($0) }
            if !target.contains(":") || port == nil || !(1...65535).contains(port!) {
                fail(settings["tcp"], "\(context).tcp: expected HOST:PORT (IPv6 as [2001:db8::1]:8000)")
            }
            probe.tcp = target
        }
        if let node = settings["capacity"] {
            if node.string == "vllm" {
                probe.capacity = nil
            } else if let items = node.sequence.map({ Array($0) }) {
                var signals: [CapacitySignal] = []
                for item in items {
                    let fields = entries(item, "\(context).capacity", known: ["series", "full", "weight"])
                    guard let names = strings(fields["series"], "\(context).capacity.series"),
                        let full = number(fields["full"], "\(context).capacity.full", 1e-9...1e15)
                    else {
                        fail(item, "\(context).capacity: each signal needs series and full")
                        continue
                    }
                    signals.append(
                        CapacitySignal(
                            names: names, full: full,
                            weight: number(fields["weight"], "\(context).capacity.weight", 0...100) ?? 1))
                }
                probe.capacity = signals
            } else {
                fail(node, "\(context).capacity: expected vllm or a list of {series, full, weight}")
            }
        }
        if let value = number(settings["high-water"], "\(context).high-water", 0...1) { probe.highWater = value }
        if let value = number(settings["low-water"], "\(context).low-water", 0...1) { probe.lowWater = value }
        if probe.lowWater > probe.highWater { fail(node, "\(context): low-water is above high-water") }
        if let value = number(settings["interval"], "\(context).interval", 0.1...3600) { probe.interval = value }
        if let value = number(settings["timeout"], "\(context).timeout", 0.01...600) { probe.timeout = value }
        if let value = number(settings["jitter"], "\(context).jitter", 0...3600) { probe.jitter = value }
        if let value = number(settings["stale"], "\(context).stale", 0.1...86400) { probe.stale = value }
        if let value = number(settings["rise"], "\(context).rise", 1...100) { probe.rise = Int(value) }
        if let value = number(settings["fall"], "\(context).fall", 1...100) { probe.fall = Int(value) }
        if probe.timeout > probe.interval { fail(node, "\(context): timeout is longer than interval") }
        if probe.effectiveJitter >= probe.interval / 2 {
            fail(node, "\(context): jitter must be under half the interval")
        }
        return probe
    }

    mutating func site(_ id: String, _ node: Node, _ policy: Policy, probeDefaults: [Tier: ProbeSettings]) -> Site? {
        let context = "sites.\(id)"
        let fields = entries(
            node, context,
            known: ["tier", "location", "jurisdiction", "ipv4", "ipv6", "max-model", "weight", "cost", "probe"])
        let line = node.mark?.line ?? 0
        guard let tier = tier(fields["tier"], "\(context).tier") else {
            if fields["tier"] == nil { fail(node, "\(context): tier is missing") }
            return nil
        }
        guard let location = fields["location"] else {
            fail(node, "\(context): location is missing")
            return nil
        }
        let place = entries(location, "\(context).location", known: ["lat", "lon", "country", "subdivision", "metro"])
        guard let lat = number(place["lat"], "\(context).location.lat", -90...90),
            let lon = number(place["lon"], "\(context).location.lon", -180...180),
            let country = country(place["country"], "\(context).location.country")
        else {
            if place["lat"] == nil || place["lon"] == nil || place["country"] == nil {
                fail(location, "\(context).location: needs lat, lon and country")
            }
            return nil
        }
        guard let jurisdiction = string(fields["jurisdiction"], "\(context).jurisdiction") else {
            if fields["jurisdiction"] == nil { fail(node, "\(context): jurisdiction is missing") }
            return nil
        }
        if let countries = policy.jurisdictions[jurisdiction] {
            if !countries.contains(country) {
                fail(
                    fields["jurisdiction"],
                    "\(context): the site is in \(country), which jurisdiction \(jurisdiction) does not list")
            }
        } else {
            fail(fields["jurisdiction"], "\(context).jurisdiction: unknown jurisdiction '\(jurisdiction)'")
        }
        let ipv4 = addresses(fields["ipv4"], "\(context).ipv4", family: 4)
        let ipv6 = addresses(fields["ipv6"], "\(context).ipv6", family: 16)
        if ipv4.isEmpty && ipv6.isEmpty && fields["ipv4"] == nil && fields["ipv6"] == nil {
            fail(node, "\(context): the site has no addresses (ipv4, ipv6)")
        }
        var probe = probeDefaults[tier] ?? ProbeSettings()
        if let node = fields["probe"] { probe = self.probe(node, "\(context).probe", base: probe) }
        // Defaults per tier can name the site's own address.
        func expand(_ text: String?) -> String? {
            guard var text else { return nil }
            text = text.replacingAll("{site}", with: id)
            if let address = ipv4.first { text = text.replacingAll("{ipv4}", with: IPPrefix.format(address)) }
            if let address = ipv6.first { text = text.replacingAll("{ipv6}", with: "[\(IPPrefix.format(address))]") }
            if text.contains("{ipv4}") || text.contains("{ipv6}") {
                fail(node, "\(context).probe: '\(text)' names an address family the site has none of")
            }
            return text
        }
        probe.http = expand(probe.http)
        probe.tcp = expand(probe.tcp)
        probe.metrics = expand(probe.metrics)
        probe.models = expand(probe.models)
        return Site(
            id: id, tier: tier, coordinates: Coordinates(latitude: lat, longitude: lon), country: country,
            subdivision: string(place["subdivision"], "\(context).location.subdivision"),
            metro: string(place["metro"], "\(context).location.metro"),
            jurisdiction: jurisdiction, ipv4: ipv4, ipv6: ipv6,
            maxModelSize: modelSize(fields["max-model"], "\(context).max-model") ?? .infinity,
            weight: Int(number(fields["weight"], "\(context).weight", 1...1_000_000) ?? 100),
            cost: number(fields["cost"], "\(context).cost", 0...1_000_000) ?? 1, probe: probe, line: line)
    }

    /// Models no site can serve, and jurisdictions whose clients can reach no site at all.
    mutating func checkReachability(_ policy: Policy, _ root: Node) {
        for model in policy.models
        where !policy.sites.contains(where: {
            Decider.serves($0, model) && (model.servedIn?.contains($0.jurisdiction) ?? true)
        }) {
            errors.append(
                PolicyError(
                    file: file, line: model.line,
                    message: "models.\(model.name): no site can serve it (tiers, size, sites and served-in leave none)")
            )
        }
        for rule in policy.rules {
            let reachable = policy.models.contains { model in
                policy.sites.contains {
                    Decider.serves($0, model) && rule.servedIn.contains($0.jurisdiction)
                        && (model.servedIn?.contains($0.jurisdiction) ?? true)
                }
            }
            if !reachable {
                errors.append(
                    PolicyError(
                        file: file, line: rule.line,
                        message: "rules: clients in \(rule.clientsIn) can reach no site for any model"))
            }
        }
    }
}

extension String {
    func replacingAll(_ target: String, with replacement: String) -> String {
        guard !target.isEmpty else { return self }
        var result = ""
        var rest = Substring(self)
        while let range = rest.range(of: target) {
            result += rest[..<range.lowerBound] + replacement
            rest = rest[range.upperBound...]
        }
        return result + rest
    }
}

func formatNumber(_ value: Double) -> String {
    value == value.rounded() && abs(value) < 1e15 ? String(Int(value)) : String(value)
}

func readText(_ path: String) -> String? {
    guard let file = fopen(path, "rb") else { return nil }
    defer { fclose(file) }
    var bytes: [UInt8] = []
    var chunk = [UInt8](repeating: 0, count: 65536)
    while true {
        let count = chunk.withUnsafeMutableBytes { fread($0.baseAddress, 1, 65536, file) }
        if count <= 0 { break }
        bytes += chunk[0..<count]
    }
    return String(decoding: bytes, as: UTF8.self)
}

#if canImport(Glibc)
import Glibc
#endif
