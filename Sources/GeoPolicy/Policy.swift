import ConfigFile

/// Where a site sits in the network; lower tiers are nearer the user and are tried first.
public enum Tier: String, Sendable, CaseIterable, Comparable {
    case edge, regional, central

    public var rank: Int { Tier.allCases.firstIndex(of: self)! }
    public static func < (lhs: Tier, rhs: Tier) -> Bool { lhs.rank < rhs.rank }
}

/// A point on the globe.
public struct Coordinates: Hashable, Sendable {
    public var latitude: Double
    public var longitude: Double
    public init(latitude: Double, longitude: Double) {
        self.latitude = latitude
        self.longitude = longitude
    }

    /// Great-circle distance in kilometres (haversine).
    public func distance(to other: Coordinates) -> Double {
        let radians = Double.pi / 180
        let dLat = (other.latitude - latitude) * radians
        let dLon = (other.longitude - longitude) * radians
        let a =
            sinSquared(dLat / 2) + cosine(latitude * radians) * cosine(other.latitude * radians) * sinSquared(dLon / 2)
        return 2 * 6371 * arcsine(min(1, a.squareRoot()))
    }
}

/// What answers are given for a model when every site that may serve a client is down.
public enum AllDownMode: String, Sendable {
    /// The sites that were up most recently (the last to go down), as if they were up.
    case lastKnownGood = "last-known-good"
    /// The policy's `fallback` sites (still within the client's jurisdictions).
    case fallback
    /// The denial (see `denial`).
    case deny
}

/// How live health enters answers.
public struct HealthPolicy: Hashable, Sendable {
    public var whenAllDown: AllDownMode = .lastKnownGood
    public var fallback: [String] = []
    /// The TTL of answers while a site in them (or one that outranks them) is near a state
    /// change or its data is stale, so that resolvers come back soon.
    public var unsettledTTL: UInt32 = 5
    public init() {}
}

/// A place that serves models.
public struct Site: Hashable, Sendable {
    public var id: String
    public var tier: Tier
    public var coordinates: Coordinates
    public var country: String
    public var subdivision: String?
    public var metro: String?
    public var jurisdiction: String
    /// 4-octet and 16-octet addresses.
    public var ipv4: [[UInt8]]
    public var ipv6: [[UInt8]]
    /// The largest model it can serve, in billions of parameters.
    public var maxModelSize: Double
    public var weight: Int
    public var cost: Double
    /// How it is probed, as written (`probe-defaults.all`, `probe-defaults.<tier>`, then the
    /// site's own `probe:`, each applied over the one before): the probes read these, this
    /// module does not.
    public var probe: [ConfigSection]
    public var line: Int
}

/// A model hostname and how it is served.
public struct Model: Hashable, Sendable {
    /// The first label of its hostname (`llama-13b` in `llama-13b.tdn.example`).
    public var name: String
    /// Billions of parameters.
    public var size: Double
    public var tiers: [Tier]
    /// Only these sites, when given.
    public var sites: [String]?
    public var ttl: UInt32
    /// Addresses returned per family.
    public var answers: Int
    /// Sovereignty: served only from sites in these jurisdictions, when given.
    public var servedIn: [String]?
    public var line: Int
}

/// A tenant: `<model>.<tenant>.<zone>` names carry its rules.
public struct Tenant: Hashable, Sendable {
    public var name: String
    public var servedIn: [String]?
    public var models: [String]?
    public var line: Int
}

/// "Clients located in `clientsIn` are served only from sites in `servedIn`."
public struct SovereigntyRule: Hashable, Sendable {
    public var clientsIn: String
    public var servedIn: [String]
    public var line: Int
}

/// An operator's own address block and where it is, consulted before the MMDB.
public struct OperatorNetwork: Hashable, Sendable {
    public var name: String
    public var prefix: IPPrefix
    public var country: String
    public var continent: String?
    public var coordinates: Coordinates?
    public var line: Int
}

/// A measured round-trip time from a country or operator network to a site.
public struct LatencyEntry: Hashable, Sendable {
    public var from: String
    public var site: String
    public var rttMilliseconds: Double
}

/// What a client gets when no site may serve it.
public struct Denial: Hashable, Sendable {
    public enum Mode: String, Sendable {
        /// NOERROR with no addresses; the SOA in authority carries `ttl` as negative TTL.
        case empty
        /// The addresses of the client's jurisdiction's denial endpoint (empty where none).
        case endpoint
        /// SERVFAIL.
        case servfail
    }
    /// The addresses of a page that explains the denial, inside one jurisdiction.
    public struct Endpoint: Hashable, Sendable {
        public var ipv4: [[UInt8]]
        public var ipv6: [[UInt8]]
    }

    public var mode: Mode = .empty
    public var ttl: UInt32 = 5
    /// Jurisdiction → its denial endpoint.
    public var endpoints: [String: Endpoint] = [:]
}

/// The whole steering policy (README "Policy file").
public struct Policy: Hashable, Sendable {
    public var file: String
    /// The zone under which model names live.
    public var zone: String
    public var jurisdictions: [String: Set<String>] = [:]
    public var rules: [SovereigntyRule] = []
    public var sites: [Site] = []
    public var models: [Model] = []
    public var tenants: [Tenant] = []
    public var networks: [OperatorNetwork] = []
    public var latency: [LatencyEntry] = []
    /// Jurisdictions allowed for clients we cannot locate; empty: such clients are denied.
    public var unknownLocationServedIn: [String] = []
    public var denial = Denial()
    /// Added to the estimated RTT of each tier, so that spill-over goes edge → regional → central.
    public var tierPenaltyMilliseconds: [Tier: Double] = [.edge: 0, .regional: 5, .central: 15]
    /// Sites within this many milliseconds of the best are near-equal and share load by weight.
    public var nearEqualMilliseconds: Double = 5
    public var health = HealthPolicy()

    public init(file: String, zone: String) {
        self.file = file
        self.zone = zone
    }

    /// The jurisdictions a country belongs to.
    public func jurisdictions(of country: String) -> [String] {
        jurisdictions.filter { $0.value.contains(country) }.map(\.key).sorted()
    }
}

// Foundation-free trigonometry for the distance estimate.
@inline(__always) func sinSquared(_ x: Double) -> Double {
    let s = sine(x)
    return s * s
}

#if canImport(Glibc)
import Glibc
@inline(__always) func sine(_ x: Double) -> Double { Glibc.sin(x) }
@inline(__always) func cosine(_ x: Double) -> Double { Glibc.cos(x) }
@inline(__always) func arcsine(_ x: Double) -> Double { Glibc.asin(x) }
#endif
