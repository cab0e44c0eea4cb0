/// Finds where a client is: operator networks first (longest prefix wins), then the MMDB.
public struct Locator: Sendable {
    public let policy: Policy
    public let geo: GeoDatabase?

    public init(policy: Policy, geo: GeoDatabase?) {
        self.policy = policy
        self.geo = geo
    }

    /// How a client was located, for `tdnd explain`.
    public struct Result: Sendable {
        public var location: Location
        /// "operator network NAME (PREFIX)", "geo database network PREFIX" or "not located".
        public var source: String
        public var prefix: IPPrefix?
    }

    /// Locates an address (4 or 16 octets; IPv4-mapped and NAT64 addresses as their IPv4).
    public func locate(_ address: [UInt8]) -> Result {
        let address = IPv4InIPv6.embedded(address) ?? address
        if let network = policy.networks.filter({ $0.prefix.contains(address) }).max(by: {
            $0.prefix.length < $1.prefix.length
        }) {
            return Result(
                location: Locator.location(of: network, geo: geo).quantized,
                source: "operator network \(network.name) (\(network.prefix))", prefix: network.prefix)
        }
        if let geo {
            let (location, length) = geo.lookup(address)
            let prefix = IPPrefix(address: address, length: length)
            if let location {
                return Result(location: location.quantized, source: "geo database network \(prefix)", prefix: prefix)
            }
            return Result(location: .unknown, source: "not in the geo database (network \(prefix))", prefix: prefix)
        }
        return Result(
            location: .unknown, source: "not located (no operator network matches and no geo database)", prefix: nil)
    }

    /// An operator network's location: its own fields, with what it leaves out filled from the
    /// geo database's record for the network's first address.
    static func location(of network: OperatorNetwork, geo: GeoDatabase?) -> Location {
        var location = Location(
            country: network.country, continent: network.continent, coordinates: network.coordinates,
            network: network.name)
        if location.continent == nil || location.coordinates == nil,
            let found = geo?.lookup(network.prefix.address).location, found.country == network.country
        {
            location.continent = location.continent ?? found.continent
            location.coordinates = location.coordinates ?? found.coordinates
        }
        return location
    }
}
