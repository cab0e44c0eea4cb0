import ConfigFile

/// Where a client is, as far as we know.
public struct Location: Hashable, Sendable, CustomStringConvertible {
    public var country: String?
    public var continent: String?
    public var coordinates: Coordinates?
    /// The operator network that located the client, if any.
    public var network: String?

    public static let unknown = Location()

    /// Coordinates rounded to 0.5° (about 50 km): a City database then yields a bounded number
    /// of distinct locations, and the planner and `explain` decide on exactly the same input.
    public var quantized: Location {
        var copy = self
        if let point = coordinates {
            copy.coordinates = Coordinates(
                latitude: (point.latitude * 2).rounded() / 2, longitude: (point.longitude * 2).rounded() / 2)
        }
        return copy
    }

    public init(
        country: String? = nil, continent: String? = nil, coordinates: Coordinates? = nil, network: String? = nil
    ) {
        self.country = country
        self.continent = continent
        self.coordinates = coordinates
        self.network = network
    }

    public var description: String {
        guard let country else { return "unknown location" }
        var parts = [country]
        if let continent { parts.append(continent) }
        if let coordinates {
            parts.append(
                "\(formatNumber((coordinates.latitude * 100).rounded() / 100)),\(formatNumber((coordinates.longitude * 100).rounded() / 100))"
            )
        }
        if let network { parts.append("network \(network)") }
        return parts.joined(separator: " ")
    }
}

/// A site's live state, as the probes report it. A site not probed is up.
public struct SiteHealth: Hashable, Sendable {
    /// Down or drained sites get no clients.
    public var up = true
    /// A full site is used only when no eligible site has room.
    public var saturated = false
    /// The models the site has loaded; nil when unknown (then every model counts as loaded).
    public var models: Set<String>? = nil
    /// Near a state change, or its data is stale: answers with it get the short TTL.
    public var unsettled = false
    /// When it was last up (seconds since 1970), for `when-all-down: last-known-good`.
    public var lastUp: Double? = nil
    public init(
        up: Bool = true, saturated: Bool = false, models: Set<String>? = nil, unsettled: Bool = false,
        lastUp: Double? = nil
    ) {
        self.up = up
        self.saturated = saturated
        self.models = models
        self.unsettled = unsettled
        self.lastUp = lastUp
    }
}

/// The health of every site by id; a site not listed is healthy.
public struct HealthView: Hashable, Sendable {
    public var sites: [String: SiteHealth] = [:]
    public init(sites: [String: SiteHealth] = [:]) { self.sites = sites }
    public subscript(site: String) -> SiteHealth { sites[site] ?? SiteHealth() }
}

/// One site's fate in a decision, for `tdnd explain`.
public struct SiteTrace: Hashable, Sendable {
    public var site: String
    public var kept: Bool
    public var reason: String
    public var rttMilliseconds: Double?
    public var score: Double?
}

/// The answer for one (model, tenant, location).
public struct Decision: Hashable, Sendable {
    /// The chosen sites, best first.
    public var sites: [String] = []
    public var ipv4: [[UInt8]] = []
    public var ipv6: [[UInt8]] = []
    public var ttl: UInt32 = 0
    /// No site may serve this client: `denial` says how to answer.
    public var denied = false
    public var denial: Denial.Mode = .empty
    public var allowedJurisdictions: [String]? = nil
    public var trace: [SiteTrace] = []
    /// Why down sites were answered (`health.when-all-down`), when they were.
    public var note: String? = nil
    /// The TTL was shortened: a site in the answer, or one that would outrank it, is unsettled.
    public var unsettled = false
}

/// Chooses sites. Sovereignty is applied first and nothing after it can widen the set: health,
/// capacity and fallbacks only reorder or remove (fails closed).
public struct Decider: Sendable {
    public let policy: Policy

    public init(policy: Policy) { self.policy = policy }

    /// Whether a site can host a model at all (tier, size, site list).
    public static func serves(_ site: Site, _ model: Model) -> Bool {
        model.tiers.contains(site.tier) && site.maxModelSize >= model.size && (model.sites?.contains(site.id) ?? true)
    }

    /// The jurisdictions a client may be served from; nil means unconstrained.
    public func allowedJurisdictions(model: Model, tenant: Tenant?, location: Location) -> Set<String>? {
        var allowed: Set<String>? = nil
        func restrict(_ names: [String]) { allowed = allowed.map { $0.intersection(names) } ?? Set(names) }
        if let servedIn = model.servedIn { restrict(servedIn) }
        if let servedIn = tenant?.servedIn { restrict(servedIn) }
        if let country = location.country {
            for rule in policy.rules where policy.jurisdictions[rule.clientsIn]?.contains(country) == true {
                restrict(rule.servedIn)
            }
        } else {
            // We cannot tell which rules apply: only what the operator allows for the unknown.
            restrict(policy.unknownLocationServedIn)
        }
        return allowed
    }

    /// Estimated round trip: the latency map first (network, then country), else distance.
    public func rtt(from location: Location, to site: Site) -> Double? {
        if let network = location.network,
            let entry = policy.latency.first(where: { $0.from == network && $0.site == site.id })
        {
            return entry.rttMilliseconds
        }
        if let country = location.country,
            let entry = policy.latency.first(where: { $0.from == country && $0.site == site.id })
        {
            return entry.rttMilliseconds
        }
        guard let coordinates = location.coordinates else { return nil }
        // Light in fibre covers ~100 km of great-circle distance per millisecond of RTT, plus
        // a little for the last mile.
        return 2 + coordinates.distance(to: site.coordinates) / 100
    }

    public func decide(model: Model, tenant: Tenant?, location: Location, health: HealthView = HealthView()) -> Decision
    {
        var decision = Decision(ttl: model.ttl)
        let allowed = allowedJurisdictions(model: model, tenant: tenant, location: location)
        decision.allowedJurisdictions = allowed.map { $0.sorted() }
        struct Candidate {
            var site: Site
            var rtt: Double?
            var score: Double
            var saturated: Bool
        }
        var candidates: [Candidate] = []
        var down: [(candidate: Candidate, lastUp: Double?)] = []
        var unsettled: [(id: String, score: Double)] = []
        for site in policy.sites {
            func exclude(_ reason: String) {
                decision.trace.append(SiteTrace(site: site.id, kept: false, reason: reason))
            }
            if !model.tiers.contains(site.tier) {
                exclude("tier \(site.tier.rawValue) does not serve \(model.name)")
                continue
            }
            if site.maxModelSize < model.size {
                exclude(
                    "serves up to \(formatNumber(site.maxModelSize))B, \(model.name) is \(formatNumber(model.size))B")
                continue
            }
            if let list = model.sites, !list.contains(site.id) {
                exclude("not in \(model.name)'s site list")
                continue
            }
            if let allowed, !allowed.contains(site.jurisdiction) {
                exclude(
                    "jurisdiction \(site.jurisdiction) not allowed for this client (allowed: \(allowed.sorted().joined(separator: ", ")))"
                )
                continue
            }
            let state = health[site.id]
            let rtt = rtt(from: location, to: site)
            let score = (rtt ?? 250) + (policy.tierPenaltyMilliseconds[site.tier] ?? 0)
            let candidate = Candidate(site: site, rtt: rtt, score: score, saturated: state.saturated)
            if state.unsettled { unsettled.append((site.id, score)) }
            if !state.up {
                exclude("down")
                down.append((candidate, state.lastUp))
                continue
            }
            if let loaded = state.models, !loaded.contains(model.name) {
                exclude("\(model.name) not loaded")
                continue
            }
            candidates.append(candidate)
        }
        // Every site that may serve this client is down: the policy says what to answer.
        if candidates.isEmpty && !down.isEmpty {
            switch policy.health.whenAllDown {
            case .lastKnownGood:
                if let latest = down.compactMap(\.lastUp).max() {
                    candidates = down.filter { $0.lastUp == latest }.map(\.candidate)
                    decision.note = "every eligible site is down: answering the last known good"
                }
            case .fallback:
                candidates = down.map(\.candidate).filter { policy.health.fallback.contains($0.site.id) }
                if !candidates.isEmpty { decision.note = "every eligible site is down: answering the fallback sites" }
            case .deny:
                break
            }
        }
        candidates.sort {
            ($0.saturated ? 1 : 0, $0.score, $0.site.cost, $0.site.id) < (
                $1.saturated ? 1 : 0, $1.score, $1.site.cost, $1.site.id
            )
        }
        // Near-equal sites share clients by weight: a weighted rendezvous hash on the location
        // reorders the front group, so different places prefer different members.
        if let best = candidates.first, !best.saturated {
            let group = candidates.prefix { !$0.saturated && $0.score - best.score <= policy.nearEqualMilliseconds }
            if group.count > 1 {
                let key = location.description + "/" + model.name
                let ordered = group.sorted { Self.rendezvous(key, $0.site) > Self.rendezvous(key, $1.site) }
                candidates.replaceSubrange(0..<group.count, with: ordered)
            }
        }
        if decision.note != nil {
            let used = Set(candidates.map(\.site.id))
            decision.trace.removeAll { used.contains($0.site) }
        }
        for candidate in candidates {
            let reason =
                decision.note.map { "down; \($0)" }
                ?? (candidate.saturated ? "saturated: used only after sites with room" : "eligible")
            decision.trace.append(
                SiteTrace(
                    site: candidate.site.id, kept: true, reason: reason,
                    rttMilliseconds: candidate.rtt, score: candidate.score))
        }
        for candidate in candidates {
            var used = false
            for address in candidate.site.ipv4 where decision.ipv4.count < model.answers {
                decision.ipv4.append(address)
                used = true
            }
            for address in candidate.site.ipv6 where decision.ipv6.count < model.answers {
                decision.ipv6.append(address)
                used = true
            }
            if used { decision.sites.append(candidate.site.id) }
            if decision.ipv4.count >= model.answers && decision.ipv6.count >= model.answers { break }
        }
        // A site in the answer, or one that would outrank it, may change state soon: a short TTL
        // brings resolvers back when the picture may have changed.
        if !unsettled.isEmpty {
            let worst = candidates.filter { decision.sites.contains($0.site.id) }.map(\.score).max() ?? .infinity
            if unsettled.contains(where: { decision.sites.contains($0.id) || $0.score <= worst }) {
                decision.ttl = min(decision.ttl, policy.health.unsettledTTL)
                decision.unsettled = true
            }
        }
        if decision.sites.isEmpty {
            decision.denied = true
            decision.denial = policy.denial.mode
            decision.ttl = policy.denial.ttl
            if policy.denial.mode == .endpoint, let country = location.country,
                let endpoint = policy.jurisdictions(of: country).lazy.compactMap({ self.policy.denial.endpoints[$0] })
                    .first
            {
                decision.ipv4 = endpoint.ipv4
                decision.ipv6 = endpoint.ipv6
            }
        }
        return decision
    }

    static func rendezvous(_ key: String, _ site: Site) -> Double {
        rendezvous(keyHash: rendezvousKey(key), id: site.id, weight: site.weight)
    }

    /// FNV-1a over `key` and the separator: the hash of `key|id` continues from it per site.
    static func rendezvousKey(_ key: String) -> UInt64 {
        var hash: UInt64 = 0xcbf2_9ce4_8422_2325
        for byte in key.utf8 { hash = (hash ^ UInt64(byte)) &* 0x100_0000_01b3 }
        return (hash ^ UInt64(UInt8(ascii: "|"))) &* 0x100_0000_01b3
    }

    static func rendezvous(keyHash: UInt64, id: String, weight: Int) -> Double {
        var hash = keyHash
        for byte in id.utf8 { hash = (hash ^ UInt64(byte)) &* 0x100_0000_01b3 }
        hash ^= hash >> 33
        hash = hash &* 0xff51_afd7_ed55_8ccd
        hash ^= hash >> 33
        let unit = (Double(hash >> 11) + 1) / Double(1 << 53)
        // Weighted rendezvous: -weight / ln(u) picks each member in proportion to its weight.
        return -Double(weight) / logarithm(unit)
    }
}

#if canImport(Glibc)
import Glibc
@inline(__always) func logarithm(_ x: Double) -> Double { Glibc.log(x) }
#endif
