import TDNTestSupport
import Testing

@testable import GeoPolicy

/// The indexed, incremental compiler against the reference: `SteeringPlanner.plan`, one
/// `Decider` decision per (name, class) over every site. Random policies, locations and health
/// sequences; the plans must be equal bit for bit (answers, their numbering, TTLs, denials).
@Suite("Steering compiler", .cpuBound)
struct SteeringCompilerTests {
    static let countries = ["DE", "FR", "US", "JP", "BR"]
    static let jurisdictionOf = ["DE": "eu", "FR": "eu", "US": "us", "JP": "jp", "BR": "br"]

    /// A random policy the loader accepts (drafts it refuses are drawn again).
    static func policy(_ random: inout SeededRandom) -> Policy {
        while true {
            if case .success(let policy) = PolicyLoader.parse(policyText(&random), file: "random.yaml") {
                return policy
            }
        }
    }

    /// A random policy, as a policy file.
    static func policyText(_ random: inout SeededRandom) -> String {
        func pick<T>(_ items: [T]) -> T { items[Int.random(in: 0..<items.count, using: &random)] }
        func chance(_ p: Double) -> Bool { Double.random(in: 0..<1, using: &random) < p }
        var lines = ["zone: t.example", "jurisdictions:", "  eu: [DE, FR]", "  us: [US]", "  jp: [JP]", "  br: [BR]"]
        lines.append("rules:")
        for (from, to) in [("eu", "[eu]"), ("us", "[us, eu]"), ("jp", "[jp, us]")] where chance(0.6) {
            lines.append("  - {clients-in: \(from), served-in: \(to)}")
        }
        if lines.last == "rules:" { lines.removeLast() }
        lines.append("unknown-location: {served-in: \(pick(["[]", "[us]", "[eu, us, jp, br]"]))}")
        let mode = pick(["empty", "endpoint", "servfail"])
        lines.append("denial:")
        lines.append("  mode: \(mode)")
        lines.append("  ttl: \(pick([5, 30]))")
        if mode == "endpoint" {
            lines.append("  endpoints:")
            lines.append("    eu: {ipv4: [192.0.2.250]}")
            if chance(0.5) { lines.append("    us: {ipv4: [192.0.2.251], ipv6: [\"2001:db8::251\"]}") }
        }
        lines.append("near-equal-ms: \(pick([0, 3, 5, 40]))")
        if chance(0.5) { lines.append("tier-penalty-ms: {edge: 0, regional: \(pick([0, 5, 50])), central: 15}") }
        let siteCount = Int.random(in: 1...50, using: &random)
        var ids: [String] = []
        lines.append("sites:")
        for index in 0..<siteCount {
            let id = "s\(String(index, radix: 36))\(pick(["", "x", "a"]))"
            guard !ids.contains(id) else { continue }
            ids.append(id)
            let country = pick(countries)
            // Coarse coordinates: equal distances, ties and near-equal groups happen.
            let lat =
                chance(0.5)
                ? Double(Int.random(in: -4...4, using: &random) * 10) : Double.random(in: -80...80, using: &random)
            let lon =
                chance(0.5)
                ? Double(Int.random(in: -6...6, using: &random) * 30) : Double.random(in: -180...180, using: &random)
            let v4 = (0..<Int.random(in: 0...2, using: &random)).map { "10.\(index).0.\($0 + 1)" }
            var v6 = (0..<Int.random(in: 0...2, using: &random)).map { "\"2001:db8:\(index)::\($0 + 1)\"" }
            if v4.isEmpty && v6.isEmpty { v6 = ["\"2001:db8:\(index)::9\""] }
            lines.append(
                "  \(id): {tier: \(pick(["edge", "edge", "regional", "central"])), location: {lat: \(lat), lon: \(lon), country: \(country)}, jurisdiction: \(jurisdictionOf[country]!), ipv4: [\(v4.joined(separator: ", "))], ipv6: [\(v6.joined(separator: ", "))], max-model: \(pick(["7b", "13b", "70b", "405b"])), weight: \(pick([1, 100, 300])), cost: \(pick([1, 1, 2]))}"
            )
        }
        lines.append("models:")
        let modelNames = ["m7", "m13", "m70", "m405"].filter { _ in chance(0.7) }
        for name in modelNames.isEmpty ? ["m7"] : modelNames {
            var fields = ["size: \(name.dropFirst())b", "answers: \(Int.random(in: 1...3, using: &random))"]
            fields.append("ttl: \(pick([30, 60]))")
            if chance(0.4) { fields.append("tiers: [\(pick(["edge", "regional, central", "edge, central"]))]") }
            if chance(0.3) { fields.append("served-in: [\(pick(["eu", "eu, us", "jp"]))]") }
            if chance(0.2) { fields.append("sites: [\(ids.filter { _ in chance(0.5) }.joined(separator: ", "))]") }
            lines.append("  \(name): {\(fields.joined(separator: ", "))}")
        }
        if chance(0.6) {
            lines.append("tenants:")
            lines.append("  acme: {served-in: [eu]}")
            if chance(0.5) { lines.append("  globex: {models: [m7, m70]}") }
        }
        lines.append("networks:")
        lines.append("  - {name: lab, prefix: 10.0.0.0/8, country: DE, lat: 50, lon: 8}")
        lines.append("  - {name: tokyo-metro, prefix: 5.9.0.0/16, country: JP}")
        if chance(0.7) {
            lines.append("latency:")
            for _ in 0..<Int.random(in: 1...8, using: &random) {
                lines.append(
                    "  - {from: \(pick(["DE", "US", "JP", "lab", "tokyo-metro"])), site: \(pick(ids)), rtt-ms: \(pick([1, 7, 30, 300]))}"
                )
            }
        }
        let allDown = pick(["last-known-good", "fallback", "deny"])
        let fallback = ids.filter { _ in chance(0.2) }
        lines.append(
            "health: {when-all-down: \(allDown)\(allDown == "fallback" ? ", fallback: [\(fallback.joined(separator: ", "))]" : ""), unsettled-ttl: 3}"
        )
        return lines.joined(separator: "\n")
    }

    static func locations(_ random: inout SeededRandom) -> [Location] {
        func pick<T>(_ items: [T]) -> T { items[Int.random(in: 0..<items.count, using: &random)] }
        var out: [Location] = [.unknown]
        for _ in 0..<Int.random(in: 1...40, using: &random) {
            var place = Location(country: pick(countries + ["CN"]), continent: pick(["EU", "NA", nil]))
            switch Int.random(in: 0..<4, using: &random) {
            case 0: break
            case 1:
                place.coordinates = Coordinates(
                    latitude: Double(Int.random(in: -4...4, using: &random) * 10),
                    longitude: Double(Int.random(in: -6...6, using: &random) * 30))
            default:
                place.coordinates = Coordinates(
                    latitude: Double.random(in: -90...90, using: &random),
                    longitude: Double.random(in: -180...180, using: &random))
            }
            if Int.random(in: 0..<5, using: &random) == 0 { place.network = pick(["lab", "tokyo-metro"]) }
            out.append(place.quantized)
        }
        return out
    }

    static func health(
        _ policy: Policy, _ random: inout SeededRandom, changing fraction: Double, from: HealthView
    )
        -> HealthView
    {
        var view = from
        // Sometimes most of the network is down: every eligible site down is a case of its own.
        let upChance = Int.random(in: 0..<4, using: &random) == 0 ? 0.2 : 0.75
        for site in policy.sites where Double.random(in: 0..<1, using: &random) < fraction {
            let models = policy.models.map(\.name)
            view.sites[site.id] = SiteHealth(
                up: Double.random(in: 0..<1, using: &random) < upChance,
                saturated: Int.random(in: 0..<4, using: &random) == 0,
                models: Int.random(in: 0..<3, using: &random) == 0
                    ? Set(models.filter { _ in Bool.random(using: &random) }) : nil,
                unsettled: Int.random(in: 0..<6, using: &random) == 0,
                lastUp: [nil, 100.0, 200.0][Int.random(in: 0..<3, using: &random)])
        }
        return view
    }

    static func expectEqual(_ got: SteeringPlan, _ want: SteeringPlan, _ context: String) {
        #expect(got.answers == want.answers, "\(context): answers differ")
        #expect(got.names.map(\.labels) == want.names.map(\.labels), "\(context): names differ")
        for (index, (got, want)) in zip(got.names, want.names).enumerated()
        where got.answerOfClass != want.answerOfClass {
            let at = zip(got.answerOfClass, want.answerOfClass).enumerated().first { $0.element.0 != $0.element.1 }
            Issue.record("\(context): name \(index) \(got.labels): class \(at?.offset ?? -1) differs")
            break
        }
    }

    /// A random policy, geography and health (`changing` of the sites changed from all up).
    static func scenario(_ random: inout SeededRandom, changing: Double) -> (Policy, SteeringGeography, HealthView) {
        let policy = Self.policy(&random)
        let geography = SteeringGeography(locations: Self.locations(&random))
        return (policy, geography, Self.health(policy, &random, changing: changing, from: HealthView()))
    }

    @Test func equalsTheReferenceDecider() {
        let seed = UInt64.random(in: 1...UInt64.max)
        var random = SeededRandom(state: seed)
        for round in 0..<150 {
            let (policy, geography, health) = Self.scenario(&random, changing: 0.7)
            let compiled = SteeringCompiler(policy: policy, geography: geography, health: health).plan()
            let reference = SteeringPlanner.plan(policy: policy, geography: geography, health: health)
            Self.expectEqual(compiled, reference, "seed \(seed) round \(round)")
        }
    }

    @Test func incrementalEqualsFullRecompile() {
        let seed = UInt64.random(in: 1...UInt64.max)
        var random = SeededRandom(state: seed)
        for round in 0..<40 {
            var (policy, geography, health) = Self.scenario(&random, changing: 0.5)
            let compiler = SteeringCompiler(policy: policy, geography: geography, health: health)
            // Half the rounds decide on two threads whenever there is more than one pair.
            if round % 2 == 1 { compiler.parallelAbove = 2 }
            for step in 0..<25 {
                // Mostly one or two sites at a time, sometimes a burst.
                let fraction = step % 7 == 6 ? 0.6 : 1.5 / Double(max(1, policy.sites.count))
                health = Self.health(policy, &random, changing: fraction, from: health)
                compiler.update(health: health)
                let context = "seed \(seed) round \(round) step \(step)"
                Self.expectEqual(
                    compiler.plan(), SteeringPlanner.plan(policy: policy, geography: geography, health: health), context
                )
                Self.expectEqual(
                    compiler.plan(), SteeringCompiler(policy: policy, geography: geography, health: health).plan(),
                    context)
            }
        }
    }

    /// A change of one site recomputes the pairs that read it, not every pair.
    @Test func aHealthChangeRecomputesOnlyWhatItCanMove() throws {
        var random = SeededRandom(state: 7)
        var lines = ["zone: t.example", "jurisdictions: {eu: [DE, FR], us: [US]}", "sites:"]
        for index in 0..<400 {
            let lat = Double.random(in: -60...60, using: &random)
            let lon = Double.random(in: -180...180, using: &random)
            lines.append(
                "  s\(index): {tier: edge, location: {lat: \(lat), lon: \(lon), country: US}, jurisdiction: us, ipv4: [10.1.\(index / 250).\(index % 250 + 1)]}"
            )
        }
        lines.append("models: {m: {size: 7b, answers: 2}}")
        let policy = try PolicyLoader.parse(lines.joined(separator: "\n"), file: "many.yaml").get()
        var places: [Location] = [.unknown]
        for _ in 0..<300 {
            places.append(
                Location(
                    country: "US",
                    coordinates: Coordinates(
                        latitude: Double.random(in: -60...60, using: &random),
                        longitude: Double.random(in: -180...180, using: &random))
                ).quantized)
        }
        let geography = SteeringGeography(locations: places)
        let compiler = SteeringCompiler(policy: policy, geography: geography)
        var health = HealthView()
        health.sites["s17"] = SiteHealth(up: false, lastUp: 100)
        let recomputed = compiler.update(health: health)
        #expect(recomputed > 0 && recomputed < places.count / 10, "recomputed \(recomputed) of \(places.count) pairs")
        Self.expectEqual(
            compiler.plan(), SteeringPlanner.plan(policy: policy, geography: geography, health: health), "one site down"
        )
        #expect(!compiler.plan().answers.contains { $0.sites.contains("s17") })
    }

    /// A region goes down at once (whole subtrees of the site index without a usable site, read
    /// as one input each) and comes back one site at a time: each return must reach the pairs
    /// that read its subtree, so every step equals a full recompile.
    @Test func aRegionComesBackSiteBySite() throws {
        var random = SeededRandom(state: UInt64.random(in: 1...UInt64.max))
        let seed = random.state
        var lines = ["zone: t.example", "jurisdictions: {us: [US]}", "sites:"]
        var region: [String] = []
        for index in 0..<300 {
            // A third of the sites crowd into one region, the rest spread over the world.
            let crowded = index % 3 == 0
            let lat = crowded ? Double.random(in: 40...44, using: &random) : Double.random(in: -60...60, using: &random)
            let lon =
                crowded ? Double.random(in: -76...(-70), using: &random) : Double.random(in: -180...180, using: &random)
            if crowded { region.append("s\(index)") }
            lines.append(
                "  s\(index): {tier: \(index % 10 == 0 ? "regional" : "edge"), location: {lat: \(lat), lon: \(lon), country: US}, jurisdiction: us, ipv4: [10.1.\(index / 250).\(index % 250 + 1)]}"
            )
        }
        lines.append("models: {m: {size: 7b, answers: 2}}")
        lines.append("health: {when-all-down: last-known-good, unsettled-ttl: 5}")
        let policy = try PolicyLoader.parse(lines.joined(separator: "\n"), file: "region.yaml").get()
        var places: [Location] = [.unknown]
        for _ in 0..<200 {
            let near = Bool.random(using: &random)
            places.append(
                Location(
                    country: "US",
                    coordinates: Coordinates(
                        latitude: near
                            ? Double.random(in: 38...46, using: &random) : Double.random(in: -60...60, using: &random),
                        longitude: near
                            ? Double.random(in: -78...(-68), using: &random)
                            : Double.random(in: -180...180, using: &random))
                ).quantized)
        }
        let geography = SteeringGeography(locations: places)
        let compiler = SteeringCompiler(policy: policy, geography: geography)
        var health = HealthView()
        for site in region { health.sites[site] = SiteHealth(up: false, lastUp: 100) }
        compiler.update(health: health)
        Self.expectEqual(
            compiler.plan(), SteeringCompiler(policy: policy, geography: geography, health: health).plan(),
            "seed \(seed): region down")
        for (step, site) in region.shuffled(using: &random).enumerated() {
            health.sites[site] =
                Bool.random(using: &random) ? SiteHealth(up: true) : SiteHealth(up: true, unsettled: true)
            compiler.update(health: health)
            Self.expectEqual(
                compiler.plan(), SteeringCompiler(policy: policy, geography: geography, health: health).plan(),
                "seed \(seed): step \(step), \(site) back")
        }
        Self.expectEqual(
            compiler.plan(), SteeringPlanner.plan(policy: policy, geography: geography, health: health), "all back")
    }
}
