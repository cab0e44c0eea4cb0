import ConfigFile

/// Reads and checks a policy file; every problem is reported, each as `file:line: message`.
/// A site's probe settings are kept as written (`Site.probe`): the probes read them.
public enum PolicyLoader {
    /// `eachSite` reads what this module leaves opaque (a site's probe settings) into the same
    /// load, so that one run reports every problem of the file.
    public static func load(
        path: String, eachSite: (Site, inout ConfigReader) -> Void = { _, _ in }
    ) -> Result<Policy, ConfigErrors> {
        ConfigReader.load(path: path, what: "the policy file").flatMap { read($0, file: path, eachSite: eachSite) }
    }

    public static func parse(
        _ text: String, file: String, eachSite: (Site, inout ConfigReader) -> Void = { _, _ in }
    ) -> Result<Policy, ConfigErrors> {
        ConfigReader.parse(text, file: file).flatMap { read($0, file: file, eachSite: eachSite) }
    }

    static func read(
        _ root: ConfigValue?, file: String, eachSite: (Site, inout ConfigReader) -> Void
    ) -> Result<Policy, ConfigErrors> {
        var reader = ConfigReader(file: file)
        guard let root, root.mapping != nil else {
            reader.fail(root, nil, "expected a mapping with zone, sites and models")
            return .failure(ConfigErrors(reader.errors))
        }
        let policy = reader.policy(root)
        for site in policy.sites { eachSite(site, &reader) }
        return reader.failure.map { .failure($0) } ?? .success(policy)
    }
}

/// The policy's own kinds of value, and the walk over its sections.
extension ConfigReader {
    mutating func addresses(_ node: ConfigValue?, _ context: String, family: Int) -> [[UInt8]] {
        guard let node else { return [] }
        var result: [[UInt8]] = []
        for text in strings(node, context) ?? [] {
            if let bytes = IPPrefix.parseAddress(text), bytes.count == family {
                result.append(bytes)
            } else {
                fail(node, context, "'\(text)' is not an IPv\(family == 4 ? 4 : 6) address")
            }
        }
        return result
    }

    /// `13b`, `70B`, `7`, `1.5t`: billions of parameters.
    mutating func modelSize(_ node: ConfigValue?, _ context: String) -> Double? {
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
            fail(node, context, "expected a model size such as 7b, 13b or 70b")
            return nil
        }
        return value * scale
    }

    mutating func tier(_ node: ConfigValue?, _ context: String) -> Tier? {
        guard let node else { return nil }
        guard let text = node.string, let tier = Tier(rawValue: text) else {
            fail(node, context, "tier must be edge, regional or central")
            return nil
        }
        return tier
    }

    mutating func country(_ node: ConfigValue?, _ context: String) -> String? {
        guard let text = string(node, context) else { return nil }
        guard text.count == 2, text.allSatisfy({ $0.isASCII && $0.isUppercase }) else {
            fail(node, context, "'\(text)' is not an ISO 3166 country code such as DE")
            return nil
        }
        return text
    }

    // MARK: - The policy

    mutating func policy(_ root: ConfigValue) -> Policy {
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
            fail(root, "zone", "missing (the zone under which model names live)")
        }
        if let node = top["jurisdictions"] {
            for (name, value) in entries(node, "jurisdictions", known: []) {
                var countries: Set<String> = []
                for code in strings(value, "jurisdictions.\(name)") ?? [] {
                    if code.count == 2 && code.allSatisfy({ $0.isASCII && $0.isUppercase }) {
                        countries.insert(code)
                    } else {
                        fail(value, "jurisdictions.\(name)", "'\(code)' is not an ISO 3166 country code")
                    }
                }
                policy.jurisdictions[name] = countries
            }
        }
        func knownJurisdictions(_ names: [String]?, _ node: ConfigValue?, _ context: String) -> [String]? {
            guard let names else { return nil }
            for name in names where policy.jurisdictions[name] == nil {
                fail(node, context, "unknown jurisdiction '\(name)'")
            }
            return names
        }
        for item in top["rules"]?.items ?? [] {
            let fields = entries(item, "rules", known: ["clients-in", "served-in"])
            guard let clients = string(fields["clients-in"], "rules.clients-in"),
                let served = strings(fields["served-in"], "rules.served-in")
            else {
                fail(item, "rules", "each rule needs clients-in and served-in")
                continue
            }
            _ = knownJurisdictions([clients], fields["clients-in"], "rules.clients-in")
            _ = knownJurisdictions(served, fields["served-in"], "rules.served-in")
            policy.rules.append(SovereigntyRule(clientsIn: clients, servedIn: served, line: item.line))
        }
        // Probe settings are the probes' to read: kept as written, in the order they apply.
        var probeDefaults: [Tier: [ConfigSection]] = [:]
        if let node = top["probe-defaults"] {
            let byTier = entries(node, "probe-defaults", known: Set(["all"] + Tier.allCases.map(\.rawValue)))
            let all = byTier["all"].map { [ConfigSection(key: "probe-defaults.all", value: $0)] } ?? []
            for tier in Tier.allCases {
                probeDefaults[tier] =
                    all
                    + (byTier[tier.rawValue].map { [ConfigSection(key: "probe-defaults.\(tier.rawValue)", value: $0)] }
                        ?? [])
            }
        }
        if let node = top["sites"] {
            for (id, value) in entries(node, "sites", known: []) {
                if let site = site(id, value, policy, probeDefaults: probeDefaults) { policy.sites.append(site) }
            }
            policy.sites.sort { $0.id < $1.id }
        } else {
            fail(root, "sites", "missing")
        }
        if let node = top["models"] {
            for (name, value) in entries(node, "models", known: []) {
                let context = "models.\(name)"
                let fields = entries(value, context, known: ["size", "tiers", "sites", "ttl", "answers", "served-in"])
                var model = Model(
                    name: name, size: 1, tiers: Tier.allCases, sites: nil, ttl: 30, answers: 2, servedIn: nil,
                    line: value.line)
                if let size = modelSize(fields["size"], "\(context).size") {
                    model.size = size
                } else if fields["size"] == nil {
                    fail(value, context, "size is missing")
                }
                if let list = fields["tiers"] {
                    model.tiers = (list.items).compactMap {
                        tier($0, "\(context).tiers")
                    }
                }
                if let ids = strings(fields["sites"], "\(context).sites") {
                    for id in ids where !policy.sites.contains(where: { $0.id == id }) {
                        fail(fields["sites"], "\(context).sites", "unknown site '\(id)'")
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
                    fail(value, context, "a model name must be one DNS label (letters, digits, '-')")
                }
                policy.models.append(model)
            }
            policy.models.sort { $0.name < $1.name }
        } else {
            fail(root, "models", "missing")
        }
        if let node = top["tenants"] {
            for (name, value) in entries(node, "tenants", known: []) {
                let context = "tenants.\(name)"
                let fields = entries(value, context, known: ["served-in", "models"])
                var tenant = Tenant(name: name, servedIn: nil, models: nil, line: value.line)
                tenant.servedIn = knownJurisdictions(
                    strings(fields["served-in"], "\(context).served-in"), fields["served-in"], "\(context).served-in")
                if let models = strings(fields["models"], "\(context).models") {
                    for model in models where !policy.models.contains(where: { $0.name == model }) {
                        fail(fields["models"], "\(context).models", "unknown model '\(model)'")
                    }
                    tenant.models = models
                }
                policy.tenants.append(tenant)
            }
            policy.tenants.sort { $0.name < $1.name }
        }
        for item in top["networks"]?.items ?? [] {
            let fields = entries(item, "networks", known: ["name", "prefix", "country", "continent", "lat", "lon"])
            guard let text = string(fields["prefix"], "networks.prefix") else {
                fail(item, "networks", "each network needs a prefix")
                continue
            }
            guard let prefix = IPPrefix(text) else {
                fail(fields["prefix"], "networks.prefix", "'\(text)' is not an address/length prefix")
                continue
            }
            guard let country = country(fields["country"], "networks.country") else {
                if fields["country"] == nil { fail(item, "networks", "\(text) needs a country") }
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
                    line: item.line))
        }
        for item in top["latency"]?.items ?? [] {
            let fields = entries(item, "latency", known: ["from", "site", "rtt-ms"])
            guard let from = string(fields["from"], "latency.from"), let site = string(fields["site"], "latency.site"),
                let rtt = number(fields["rtt-ms"], "latency.rtt-ms", 0...10000)
            else {
                fail(item, "latency", "each entry needs from, site and rtt-ms")
                continue
            }
            if !policy.sites.contains(where: { $0.id == site }) {
                fail(fields["site"], "latency.site", "unknown site '\(site)'")
            }
            let isCountry = from.count == 2 && from.allSatisfy { $0.isUppercase }
            if !isCountry && !policy.networks.contains(where: { $0.name == from }) {
                fail(fields["from"], "latency.from", "'\(from)' is neither a country code nor a network name")
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
                    fail(fields["mode"], "denial.mode", "expected empty, endpoint or servfail")
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
                fail(node, "denial", "mode endpoint needs endpoints per jurisdiction")
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
                    fail(fields["when-all-down"], "health.when-all-down", "expected last-known-good, fallback or deny")
                }
            }
            if let ids = strings(fields["fallback"], "health.fallback") {
                for id in ids where !policy.sites.contains(where: { $0.id == id }) {
                    fail(fields["fallback"], "health.fallback", "unknown site '\(id)'")
                }
                policy.health.fallback = ids
            }
            if policy.health.whenAllDown == .fallback && policy.health.fallback.isEmpty {
                fail(node, "health", "when-all-down fallback needs a fallback list of sites")
            }
            if let ttl = number(fields["unsettled-ttl"], "health.unsettled-ttl", 0...86400) {
                policy.health.unsettledTTL = UInt32(ttl)
            }
        }
        if errors.isEmpty { checkReachability(policy, root) }
        return policy
    }

    mutating func site(
        _ id: String, _ node: ConfigValue, _ policy: Policy, probeDefaults: [Tier: [ConfigSection]]
    ) -> Site? {
        let context = "sites.\(id)"
        let fields = entries(
            node, context,
            known: ["tier", "location", "jurisdiction", "ipv4", "ipv6", "max-model", "weight", "cost", "probe"])
        let line = node.line
        guard let tier = tier(fields["tier"], "\(context).tier") else {
            if fields["tier"] == nil { fail(node, context, "tier is missing") }
            return nil
        }
        guard let location = fields["location"] else {
            fail(node, context, "location is missing")
            return nil
        }
        let place = entries(location, "\(context).location", known: ["lat", "lon", "country", "subdivision", "metro"])
        guard let lat = number(place["lat"], "\(context).location.lat", -90...90),
            let lon = number(place["lon"], "\(context).location.lon", -180...180),
            let country = country(place["country"], "\(context).location.country")
        else {
            if place["lat"] == nil || place["lon"] == nil || place["country"] == nil {
                fail(location, "\(context).location", "needs lat, lon and country")
            }
            return nil
        }
        guard let jurisdiction = string(fields["jurisdiction"], "\(context).jurisdiction") else {
            if fields["jurisdiction"] == nil { fail(node, context, "jurisdiction is missing") }
            return nil
        }
        if let countries = policy.jurisdictions[jurisdiction] {
            if !countries.contains(country) {
                fail(
                    fields["jurisdiction"], context,
                    "the site is in \(country), which jurisdiction \(jurisdiction) does not list")
            }
        } else {
            fail(fields["jurisdiction"], "\(context).jurisdiction", "unknown jurisdiction '\(jurisdiction)'")
        }
        let ipv4 = addresses(fields["ipv4"], "\(context).ipv4", family: 4)
        let ipv6 = addresses(fields["ipv6"], "\(context).ipv6", family: 16)
        if ipv4.isEmpty && ipv6.isEmpty && fields["ipv4"] == nil && fields["ipv6"] == nil {
            fail(node, context, "the site has no addresses (ipv4, ipv6)")
        }
        var probe = probeDefaults[tier] ?? []
        if let node = fields["probe"] { probe.append(ConfigSection(key: "\(context).probe", value: node)) }
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
    mutating func checkReachability(_ policy: Policy, _ root: ConfigValue) {
        for model in policy.models
        where !policy.sites.contains(where: {
            Decider.serves($0, model) && (model.servedIn?.contains($0.jurisdiction) ?? true)
        }) {
            add([
                ConfigError(
                    file: file, line: model.line, key: "models.\(model.name)",
                    message: "no site can serve it (tiers, size, sites and served-in leave none)")
            ])
        }
        for rule in policy.rules {
            let reachable = policy.models.contains { model in
                policy.sites.contains {
                    Decider.serves($0, model) && rule.servedIn.contains($0.jurisdiction)
                        && (model.servedIn?.contains($0.jurisdiction) ?? true)
                }
            }
            if !reachable {
                add([
                    ConfigError(
                        file: file, line: rule.line, key: "rules",
                        message: "clients in \(rule.clientsIn) can reach no site for any model")
                ])
            }
        }
    }
}
