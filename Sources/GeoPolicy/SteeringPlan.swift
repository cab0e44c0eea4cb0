/// What one steered name answers for a class of clients.
public struct SteeringAnswer: Hashable, Sendable {
    public var ipv4: [[UInt8]]
    public var ipv6: [[UInt8]]
    public var ttl: UInt32
    public var denied: Bool
    public var denial: Denial.Mode
    /// The sites whose addresses these are (for metrics by site).
    public var sites: [String]
}

/// Where clients are: location classes and the address space cut into prefixes of each. It
/// depends on the policy's networks and the geo database only, so health changes reuse it.
public struct SteeringGeography: Sendable {
    /// Location classes; class 0 is "unknown location".
    public var locations: [Location] = [.unknown]
    public var v4: [(UInt32, UInt8, Int32)] = []
    public var v6: [(UInt64, UInt64, UInt8, Int32)] = []

    public init(locations: [Location] = [.unknown]) { self.locations = locations }
}

/// The control plane's whole steering output, ready for the DNS snapshot: the address space cut
/// into disjoint prefixes, each with a location class, and for every model hostname the answer
/// of each class. Computed when the policy, the geo database or health changes; never per query.
public struct SteeringPlan: Sendable {
    /// Location classes; class 0 is "unknown location".
    public var locations: [Location] = [.unknown]
    /// IPv4 prefixes (network, length, class), database networks first, then operator networks
    /// from the shortest to the longest, so that a later, more specific entry wins.
    public var v4: [(UInt32, UInt8, Int32)] = []
    public var v6: [(UInt64, UInt64, UInt8, Int32)] = []
    /// Steered hostnames as labels below the zone: `[model]` or `[model, tenant]`.
    public var names: [(labels: [String], answerOfClass: [Int32])] = []
    public var answers: [SteeringAnswer] = []
    /// Per answer, a key that stays the same for the same answer from one plan of a
    /// `SteeringCompiler` to the next (while `answerKeyEpoch` does): a consumer may reuse what it
    /// made of that answer. Empty for plans without such keys.
    public var answerKeys: [Int32] = []
    public var answerKeyEpoch: UInt64 = 0
    public var zone: String

    public init(zone: String) { self.zone = zone }
}

/// Builds the plan: locations from the MMDB (coordinates rounded to 0.5° so that a City database
/// gives a bounded number of classes) and from the operator networks, then one decision per
/// (name, class).
public enum SteeringPlanner {
    public static func geography(policy: Policy, geo: GeoDatabase?) -> SteeringGeography {
        var plan = SteeringGeography()
        var classOf: [Location: Int32] = [.unknown: 0]
        func locate(_ found: Location?) -> Int32 {
            guard let found, found.country != nil else { return 0 }
            let location = found.quantized
            if let known = classOf[location] { return known }
            let id = Int32(plan.locations.count)
            plan.locations.append(location)
            classOf[location] = id
            return id
        }
        var v4: [(UInt32, UInt8, Int32)] = []
        var v6: [(UInt64, UInt64, UInt8, Int32)] = []
        geo?.networks(locate, v4: &v4, v6: &v6)
        plan.v4 = v4
        plan.v6 = v6
        for network in policy.networks.sorted(by: { $0.prefix.length < $1.prefix.length }) {
            let id = locate(Locator.location(of: network, geo: geo))
            let bytes = network.prefix.address
            if network.prefix.isIPv4 {
                plan.v4.append((bytes.reduce(0) { $0 << 8 | UInt32($1) }, UInt8(network.prefix.length), id))
            } else {
                let high = bytes[0..<8].reduce(UInt64(0)) { $0 << 8 | UInt64($1) }
                let low = bytes[8..<16].reduce(UInt64(0)) { $0 << 8 | UInt64($1) }
                plan.v6.append((high, low, UInt8(network.prefix.length), id))
            }
        }
        return plan
    }

    /// One `Decider` decision per (name, location class) under `health`: the reference that
    /// `SteeringCompiler` must equal (its tests compare the two).
    public static func plan(
        policy: Policy, geography: SteeringGeography, health: HealthView = HealthView()
    ) -> SteeringPlan {
        var plan = SteeringPlan(zone: policy.zone)
        plan.locations = geography.locations
        plan.v4 = geography.v4
        plan.v6 = geography.v6
        let decider = Decider(policy: policy)
        var answerIndex: [SteeringAnswer: Int32] = [:]
        func add(_ labels: [String], _ model: Model, _ tenant: Tenant?) {
            var row: [Int32] = []
            row.reserveCapacity(plan.locations.count)
            for location in plan.locations {
                let decision = decider.decide(model: model, tenant: tenant, location: location, health: health)
                let answer = SteeringAnswer(
                    ipv4: decision.ipv4, ipv6: decision.ipv6, ttl: decision.ttl, denied: decision.denied,
                    denial: decision.denial, sites: decision.sites)
                if let known = answerIndex[answer] {
                    row.append(known)
                } else {
                    let id = Int32(plan.answers.count)
                    plan.answers.append(answer)
                    answerIndex[answer] = id
                    row.append(id)
                }
            }
            plan.names.append((labels, row))
        }
        for model in policy.models {
            add([model.name], model, nil)
            for tenant in policy.tenants where tenant.models?.contains(model.name) ?? true {
                add([model.name, tenant.name], model, tenant)
            }
        }
        return plan
    }
}
