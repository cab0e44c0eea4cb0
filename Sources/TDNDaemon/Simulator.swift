import ConfigFile
import Foundation
import GeoPolicy
import HealthProbe
import Synchronization

/// How a simulated run picks each class's answer.
enum SteeringRule: String, CaseIterable, Codable, Sendable {
    /// The nearest sites by distance that the probes say are up, load and sovereignty unseen:
    /// what gdnsd's and Knot's geo modules do.
    case nearest = "nearest-binary"
    /// tdnd's compiler today: sovereignty first, then score, full sites (high/low water marks)
    /// after those with room.
    case fullNotFull = "full-not-full"
    /// Answer-share budgets (`AnswerBudgets`): each site's headroom from its load figure is a
    /// budget of demand; pairs move to the next-best allowed site, least added latency first,
    /// with the water marks as hysteresis. Run as `serve` runs it (`Steering.rebalance`), with
    /// demand measured as the data plane measures it.
    case budgets
}

/// What one run measured (README "Simulator" defines each figure); in JSON with snake_case keys.
struct SimulationFigures: Codable, Sendable {
    struct Recovery: Codable, Sendable {
        var event: String
        /// Seconds until less than 0.1% of the demand still went to failed sites; nil: never.
        var seconds: Double?
    }
    var rule: SteeringRule
    var optimalShare: Double
    var overloadShare: Double
    var sovereigntyViolations: Int
    var answerFlipsPerClassHour: Double
    var recoverySeconds: [Recovery]
    /// Requests that reached no working site (a failed one, or a denial), as a share.
    var lostShare: Double
    /// The traced sites' load and share of all demand over time (every 5 simulated seconds).
    var trace: [Sample]?

    struct Sample: Codable, Sendable {
        var time: Double
        var site: String
        var load: Double
        var share: Double
    }

}

/// The simulator's only source of chance (a 64-bit linear congruential generator with Knuth's
/// MMIX constants, its high bits folded in), so that one seed gives one run.
struct SimulationRandom: RandomNumberGenerator {
    var state: UInt64
    mutating func next() -> UInt64 {
        state = state &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
        return state ^ (state >> 29)
    }
}

/// The simulated time the health monitor reads.
final class SimulatedClock: Sendable {
    private let time = Mutex(0.0)
    var now: Double { time.withLock { $0 } }
    func set(_ value: Double) { time.withLock { $0 = value } }
}

/// Drives the real decision and compile code in simulated time: clients in the geo database's
/// location classes (weighted by their addresses) behind resolvers that cache each answer for
/// its TTL, sites with a capacity, the probe loop (interval, jitter, fall/rise, staleness)
/// through the real `HealthMonitor`, and the scenario's events. The same population and the
/// same events run under each `SteeringRule`.
struct Simulator {
    let scenario: Scenario
    let policy: Policy
    /// Location classes and their prefixes, as `serve` builds them from the geo database.
    let geography: SteeringGeography
    /// Every site probed as the policy's probe settings say (interval, fall/rise, marks).
    let targets: [ProbeTarget]

    /// Location classes with addresses, and the share of all addresses in each.
    let classes: [Int]
    let weights: [Double]
    /// The models with demand.
    let models: [Model]
    let capacity: [Double]
    let siteIndex: [String: Int]
    /// Per (class position, model position): the sites the class may use for the model with
    /// their scores, best first (sovereignty, tier and size applied; health not).
    let eligible: [[[(site: Int, score: Double)]]]
    let allowed: [[Set<String>?]]
    /// Per (class position, model position): every site that hosts the model, nearest first
    /// (the `nearest` rule's order; sovereignty unseen).
    let nearest: [[[Int]]]

    init(scenario: Scenario, policy: Policy, geo: GeoDatabase?) throws(ConfigErrors) {
        self.scenario = scenario
        self.policy = policy
        let decider = Decider(policy: policy)
        let geography = SteeringPlanner.geography(policy: policy, geo: geo)
        self.geography = geography
        var reader = ConfigReader(file: policy.file)
        targets = policy.sites.map { ProbePlan.settings(of: $0, &reader).target(site: $0.id) }
        let tiers = Set(Tier.allCases.map(\.rawValue))
        for (site, _) in scenario.capacity
        where !tiers.contains(site) && !policy.sites.contains(where: { $0.id == site }) {
            reader.fail(nil, "capacity.\(site)", "no site \(site) in \(policy.file)")
        }
        for model in scenario.demand.keys where !policy.models.contains(where: { $0.name == model }) {
            reader.fail(nil, "demand.\(model)", "no model \(model) in \(policy.file)")
        }
        let siteIDs = Set(policy.sites.map(\.id))
        for (number, event) in scenario.events.enumerated() {
            let key = "events[\(number)]"
            switch event.kind {
            case .fail(let sites), .stale(let sites):
                for site in sites where !siteIDs.contains(site) {
                    reader.fail(nil, key, "no site \(site) in \(policy.file)")
                }
            case .failJurisdiction(let name) where policy.jurisdictions[name] == nil:
                reader.fail(nil, key, "no jurisdiction \(name) in \(policy.file)")
            case .flashCrowd(let model, _) where scenario.demand[model] == nil:
                reader.fail(nil, key, "flash crowd on \(model), which has no demand")
            default: break
            }
        }
        if let failure = reader.failure { throw failure }

        var addresses = [Double](repeating: 0, count: geography.locations.count)
        for (_, length, location) in geography.v4 { addresses[Int(location)] += pow(2, Double(32 - Int(length))) }
        let classes = addresses.indices.filter { $0 > 0 && addresses[$0] > 0 }
        let total = classes.reduce(0) { $0 + addresses[$1] }
        self.classes = classes
        weights = classes.map { addresses[$0] / max(total, 1) }
        let models = policy.models.filter { scenario.demand[$0.name] != nil }
        self.models = models
        capacity = policy.sites.map {
            scenario.capacity[$0.id] ?? scenario.capacity[$0.tier.rawValue] ?? scenario.defaultCapacity
        }
        let index = Dictionary(uniqueKeysWithValues: policy.sites.enumerated().map { ($1.id, $0) })
        siteIndex = index
        var eligible: [[[(site: Int, score: Double)]]] = []
        var allowed: [[Set<String>?]] = []
        for location in classes.map({ geography.locations[$0] }) {
            var perModel: [[(site: Int, score: Double)]] = []
            var allowedPerModel: [Set<String>?] = []
            for model in models {
                let decision = decider.decide(model: model, tenant: nil, location: location)
                perModel.append(
                    decision.trace.filter(\.kept).compactMap { trace in
                        index[trace.site].map { ($0, trace.score ?? 0) }
                    }.sorted { $0.score < $1.score })
                allowedPerModel.append(decision.allowedJurisdictions.map(Set.init))
            }
            eligible.append(perModel)
            allowed.append(allowedPerModel)
        }
        self.eligible = eligible
        self.allowed = allowed
        nearest = classes.map { location in
            models.map { model in
                policy.sites.indices.filter { Decider.serves(policy.sites[$0], model) }
                    .map { ($0, decider.rtt(from: geography.locations[location], to: policy.sites[$0]) ?? 250) }
                    .sorted { ($0.1, $0.0) < ($1.1, $1.0) }.map(\.0)
            }
        }
    }

    /// The sites the scenario has failed at `time`.
    func failed(at time: Double) -> Set<Int> {
        var out = Set<Int>()
        for event in scenario.events where event.active(at: time) {
            switch event.kind {
            case .fail(let sites): out.formUnion(sites.compactMap { siteIndex[$0] })
            case .failJurisdiction(let name):
                out.formUnion(policy.sites.indices.filter { policy.sites[$0].jurisdiction == name })
            default: break
            }
        }
        return out
    }

    func stale(at time: Double) -> Set<Int> {
        var out = Set<Int>()
        for event in scenario.events where event.active(at: time) {
            if case .stale(let sites) = event.kind { out.formUnion(sites.compactMap { siteIndex[$0] }) }
        }
        return out
    }

    func demand(of model: Model, at time: Double) -> Double {
        var rate = scenario.demand[model.name] ?? 0
        for event in scenario.events where event.active(at: time) {
            if case .flashCrowd(model.name, let factor) = event.kind { rate *= factor }
        }
        return rate
    }

    /// One whole run under `rule`.
    func run(_ rule: SteeringRule, tracing traced: [String] = []) -> SimulationFigures {
        let tracedSites = traced.compactMap { siteIndex[$0] }
        var samples: [SimulationFigures.Sample] = []
        var nextSample = 0.0
        var random = SimulationRandom(state: scenario.seed)
        let clock = SimulatedClock()
        let epoch = 1_700_000_000.0
        let monitor = HealthMonitor(clock: { clock.now }, wallClock: { epoch + clock.now })
        monitor.configure(targets)
        let hosted = policy.sites.map { site in Set(policy.models.filter { Decider.serves(site, $0) }.map(\.name)) }
        // As `serve` does, a first round probes every site before any answer; after it each
        // site keeps its own phase.
        var nextProbe = [Double](repeating: 0, count: targets.count)
        var phase = targets.map { Double.random(in: 0..<$0.interval, using: &random) }
        // The budgets run as `serve` runs them (`ConfigurationLoader.Steering.rebalance`); the
        // full/not-full rule is the compiler alone.
        let steering =
            rule == .budgets
            ? ConfigurationLoader.Steering(
                policy: policy, geography: geography, health: ProbePlan.view(targets, monitor), geoPath: nil,
                tries: false) : nil
        let compiler =
            steering?.compiler
            ?? (rule == .nearest
                ? nil
                : SteeringCompiler(policy: policy, geography: geography, health: ProbePlan.view(targets, monitor)))
        var plan = compiler?.plan()
        let nameOf = Dictionary(
            uniqueKeysWithValues: (plan?.names ?? []).enumerated().compactMap { index, name in
                name.labels.count == 1 ? (name.labels[0], index) : nil
            })
        let rules = Dictionary(targets.map { ($0.site, $0.rules) }, uniquingKeysWith: { first, _ in first })

        // Resolvers in proportion to each class's addresses (at least one); per (class, model)
        // pair, each resolver's cached answer and when it expires.
        let resolvers = weights.map { max(1, Int(($0 * Double(scenario.resolvers)).rounded())) }
        let pairs = classes.count * models.count
        var cached = (0..<pairs).map { [[Int]](repeating: [], count: resolvers[$0 / models.count]) }
        var expires = (0..<pairs).map { [Double](repeating: 0, count: resolvers[$0 / models.count]) }
        // A pair's resolvers fall into `shards` shards (resolver r into r mod shards), each with
        // an answer of its own: the budgets move demand a shard at a time, the other rules give
        // every shard of a pair the same answer.
        let shards = scenario.shards
        var current = [(sites: [Int], ttl: Double)](repeating: ([], 0), count: pairs * shards)
        // The data plane's view of demand: a decayed rate of each pair's queries, each counted
        // as the TTL it was answered with (the shards of a class count as one, as
        // `DemandEstimate` shares a class evenly among them).
        var queries = [Double](repeating: 0, count: pairs)
        var rate = DecayedRates<Int>(window: DemandEstimate.window, count: pairs)
        let full = targets.map(\.rules.highWater)
        let empty = targets.map(\.rules.lowWater)
        // The operator's "full", from the true load: above the high-water mark, until back
        // below the low-water mark.
        var isFull = [Bool](repeating: false, count: policy.sites.count)
        var flips = 0
        var load = [Double](repeating: 0, count: policy.sites.count)
        var optimal = 0.0
        var counted = 0.0
        var lost = 0.0
        var demanded = 0.0
        var violations = 0.0
        var overloadSeconds = 0.0
        let failures = scenario.events.filter {
            guard $0.at < scenario.duration else { return false }
            if case .fail = $0.kind { return true }
            if case .failJurisdiction = $0.kind { return true }
            return false
        }
        var recovered = [Double?](repeating: nil, count: failures.count)

        /// The class's current answer under `rule`, as site indexes, and its TTL.
        func answer(_ position: Int, _ modelPosition: Int, view: HealthView) -> (sites: [Int], ttl: Double) {
            let model = models[modelPosition]
            if let plan, let name = nameOf[model.name] {
                let chosen = plan.answers[Int(plan.names[name].answerOfClass[classes[position]])]
                return (chosen.sites.compactMap { siteIndex[$0] }, Double(chosen.ttl))
            }
            // Nearest by distance among the sites that host the model and are up.
            let up = nearest[position][modelPosition].lazy.filter { view[policy.sites[$0].id].up }
            return (Array(up.prefix(model.answers)), Double(model.ttl))
        }

        let step = scenario.step
        var time = 0.0
        var view = ProbePlan.view(targets, monitor)
        var first = true
        while time < scenario.duration {
            clock.set(time)
            let failed = failed(at: time)
            let stale = stale(at: time)
            // The probe loop: each site on its interval with jitter, seeing this moment's load.
            var probed = false
            for (index, target) in targets.enumerated() where nextProbe[index] <= time {
                var result = ProbeResult(
                    healthy: !failed.contains(index), detail: failed.contains(index) ? "simulated failure" : "ok")
                if result.healthy && !stale.contains(index) {
                    result.capacity = CapacityModel.Reading(load: load[index], parts: [])
                    result.models = hosted[index]
                }
                monitor.record(site: target.site, result: result)
                let jitter = target.jitter > 0 ? Double.random(in: -target.jitter...target.jitter, using: &random) : 0
                nextProbe[index] += max(step, target.interval + jitter + phase[index])
                phase[index] = 0
                probed = true
            }
            if probed || first {
                view = ProbePlan.view(targets, monitor)
                if let steering {
                    _ = steering.update(health: view)
                    plan = compiler?.plan()
                    let rates = rate.rates(0) ?? [Double](repeating: 0, count: pairs)
                    for (modelPosition, model) in models.enumerated() {
                        guard let name = nameOf[model.name] else { continue }
                        var perLocation = [Double](repeating: 0, count: geography.locations.count)
                        for position in classes.indices {
                            perLocation[classes[position]] = rates[position * models.count + modelPosition]
                        }
                        steering.demand.rates[steering.names[name].description] = perLocation
                    }
                    _ = steering.rebalance(
                        health: view, loads: monitor.freshLoads(), rules: rules, demand: steering.demand, now: time)
                } else if let compiler, compiler.update(health: view) > 0 {
                    plan = compiler.plan()
                }
                // The answers as published now; a change of a class's sites is a flip.
                for position in classes.indices {
                    for modelPosition in models.indices {
                        let common = answer(position, modelPosition, view: view)
                        let pair = position * models.count + modelPosition
                        for slot in pair * shards..<(pair + 1) * shards {
                            var now = common
                            if let steering, let name = nameOf[models[modelPosition].name],
                                let choice = steering.budgetChoices[
                                    .init(name: name, location: classes[position], shard: slot - pair * shards)]
                            {
                                now = (choice.sites.compactMap { siteIndex[$0] }, Double(choice.ttl))
                            }
                            if !first && current[slot].sites != now.sites { flips += 1 }
                            current[slot] = now
                        }
                    }
                }
                first = false
            }
            // Clients: each resolver serves from its cache and asks again when it expires. A
            // client uses the first address that works (the first site, else the next).
            var served = [Double](repeating: 0, count: policy.sites.count)
            var toFailed = 0.0
            var total = 0.0
            let modelDemand = models.map { demand(of: $0, at: time) }
            for position in classes.indices {
                for modelPosition in models.indices {
                    let pair = position * models.count + modelPosition
                    let share = modelDemand[modelPosition] * weights[position] / Double(resolvers[position])
                    let ranked = eligible[position][modelPosition]
                    // "Room" is the operator's: not full by the water marks.
                    let best = ranked.first { !failed.contains($0.site) && !isFull[$0.site] }
                    for resolver in 0..<resolvers[position] {
                        let shard = pair * shards + resolver % shards
                        if expires[pair][resolver] <= time {
                            let (sites, ttl) = current[shard]
                            cached[pair][resolver] = sites
                            queries[pair] += ttl
                            // The first answers expire at staggered times, as caches do.
                            let first = expires[pair][resolver] == 0
                            expires[pair][resolver] =
                                time + (first ? ttl * Double(resolver + 1) / Double(resolvers[position]) : ttl)
                        }
                        total += share
                        let sites = cached[pair][resolver]
                        if let head = sites.first, failed.contains(head) { toFailed += share }
                        guard let site = sites.first(where: { !failed.contains($0) }) else {
                            lost += share * step
                            continue
                        }
                        served[site] += share
                        if let allowedHere = allowed[position][modelPosition],
                            !allowedHere.contains(policy.sites[site].jurisdiction)
                        {
                            violations += share * step
                        }
                        if let best {
                            counted += share * step
                            let score = ranked.first { $0.site == site }?.score
                            if let score, score <= best.score + policy.nearEqualMilliseconds, load[site] <= 1 {
                                optimal += share * step
                            }
                        }
                    }
                }
            }
            // Decayed over about a minute, as `DemandEstimate` does.
            rate.fold([0: queries], over: step)
            queries = [Double](repeating: 0, count: pairs)
            demanded += total * step
            for site in served.indices {
                load[site] = served[site] / capacity[site]
                if load[site] > 1 + 1e-9 { overloadSeconds += step }
                if load[site] > full[site] {
                    isFull[site] = true
                } else if load[site] < empty[site] {
                    isFull[site] = false
                }
            }
            if !tracedSites.isEmpty && time >= nextSample {
                for site in tracedSites {
                    samples.append(
                        .init(
                            time: time, site: policy.sites[site].id, load: load[site],
                            share: total > 0 ? served[site] / total : 0))
                }
                nextSample += 5
            }
            for (index, event) in failures.enumerated() where recovered[index] == nil && event.active(at: time) {
                if total > 0 && toFailed / total < 0.001 { recovered[index] = time - event.at }
            }
            time += step
        }
        let hours = scenario.duration / 3600
        return SimulationFigures(
            rule: rule, optimalShare: counted > 0 ? optimal / counted : 1,
            overloadShare: overloadSeconds / (Double(policy.sites.count) * scenario.duration),
            sovereigntyViolations: Int(violations.rounded()),
            answerFlipsPerClassHour: Double(flips) / (Double(classes.count * models.count * shards) * hours),
            recoverySeconds: failures.indices.map { .init(event: failures[$0].label, seconds: recovered[$0]) },
            lostShare: demanded > 0 ? lost / demanded : 0, trace: tracedSites.isEmpty ? nil : samples)
    }
}
