import GeoPolicy
import HealthProbe
import TDNDNS

/// Rates by key and position, each a moving average decayed over `window` seconds, with a
/// bias correction: early on a rate is the mean of what was seen so far, not a ramp up from
/// zero. The demand estimate and the simulator both measure demand with it.
struct DecayedRates<Key: Hashable> {
    let window: Double
    let count: Int
    /// The decayed rates before correction, and the weight that corrects them.
    private var raw: [Key: [Double]] = [:]
    private var weight = 0.0

    init(window: Double, count: Int) {
        self.window = window
        self.count = count
    }

    /// Folds in what was seen over the last `elapsed` seconds (amounts per position, by key);
    /// a key known before and not seen now folds in zeros.
    mutating func fold(_ seen: [Key: [Double]], over elapsed: Double) {
        let blend = min(1, elapsed / window)
        weight += (1 - weight) * blend
        for key in Set(raw.keys).union(seen.keys) {
            var rate = raw[key] ?? [Double](repeating: 0, count: count)
            let amounts = seen[key]
            for position in rate.indices {
                rate[position] += ((amounts?[position] ?? 0) / elapsed - rate[position]) * blend
            }
            raw[key] = rate
        }
    }

    /// The corrected rates of `key` (nil: never seen).
    func rates(_ key: Key) -> [Double]? {
        raw[key].map { rate in rate.map { weight > 0 ? $0 / weight : 0 } }
    }

    var keys: Dictionary<Key, [Double]>.Keys { raw.keys }
}

/// Client demand per (steered name, location class), estimated from what the data plane
/// counted: queries per (name, row) of each steering part (`QueryStats.takeRows`), a row
/// standing for the (location class, shard) cells that part answers alike. A row's queries are
/// shared among its cells by the cells' addresses (a shard is a sixteenth of its class), and
/// each cell's rate is decayed over about a minute. Each query counts as the TTL it was answered
/// with: a resolver asks about once per TTL for all of its clients, so queries × TTL stands for
/// the resolver populations behind them, and does not grow when a short TTL brings the same
/// resolvers back sooner.
final class DemandEstimate: @unchecked Sendable {
    /// The time over which a rate follows a change.
    static let window = 60.0

    /// Demand (queries × TTL, per second) per name (by steered name) and location class (set
    /// directly by the simulator, whose resolvers are counted without a data plane).
    var rates: [String: [Double]] = [:]
    /// Addresses per location class (IPv4; at least 1 each).
    private let weights: [Double]
    /// Recently published steering parts by generation, each with its cells' rows.
    private var parts: [UInt64: Part] = [:]
    private var lastUpdate: Double?
    private var decayed: DecayedRates<String>

    private struct Part {
        let names: [String]
        let rowCount: Int
        /// Per (location, shard): its row.
        let rowOfCell: [Int32]
        /// Per row: the weight of its cells.
        let rowWeight: [Double]
        /// Per (name, row): the TTL its answer carries.
        let ttl: [[Double]]
        let published: Double
    }

    init(geography: SteeringGeography) {
        var weights = [Double](repeating: 1, count: geography.locations.count)
        for (_, length, location) in geography.v4 where Int(location) < weights.count {
            weights[Int(location)] += Double(UInt64(1) << UInt64(32 - Int(length)))
        }
        self.weights = weights
        decayed = DecayedRates(window: Self.window, count: weights.count)
    }

    /// Notes a published steering part, so that counts made under it can be attributed.
    func note(_ part: SteeringData, names: [String], at now: Double) {
        guard parts[part.generation] == nil else { return }
        let shards = SteeringTable.shardCount
        var rowOfCell = [Int32](repeating: 0, count: part.locationCount * shards)
        var rowWeight = [Double](repeating: 0, count: part.rowCount)
        for location in 0..<part.locationCount {
            let weight = location < weights.count ? weights[location] : 1
            for shard in 0..<shards {
                let row = part.row(location: location, shard: shard)
                rowOfCell[location * shards + shard] = Int32(row)
                if row < rowWeight.count { rowWeight[row] += weight / Double(shards) }
            }
        }
        let ttl = names.indices.map { name in (0..<part.rowCount).map { Double(part.ttl(name: name, row: $0)) } }
        parts[part.generation] = Part(
            names: names, rowCount: part.rowCount, rowOfCell: rowOfCell, rowWeight: rowWeight, ttl: ttl,
            published: now)
        // Counts arrive within about a second of the query; a part replaced long ago has none.
        if parts.count > 8 {
            for (generation, _) in parts.sorted(by: { $0.value.published < $1.value.published }).prefix(parts.count - 8)
            {
                parts[generation] = nil
            }
        }
    }

    /// Folds the counts since the last update in, as rates over the time since then.
    func update(_ counts: [QueryStats.RowKey: UInt64], at now: Double) {
        defer { lastUpdate = now }
        guard let last = lastUpdate, now > last else { return }
        let elapsed = now - last
        var seen: [String: [Double]] = [:]
        for (generation, part) in parts {
            // Per name: the queries of each row.
            var byRow: [Int: [Double]] = [:]
            for (key, count) in counts where key.generation == generation && key.name < part.names.count {
                guard key.row < part.rowCount else { continue }
                byRow[key.name, default: [Double](repeating: 0, count: part.rowCount)][key.row] +=
                    Double(count) * part.ttl[key.name][key.row]
            }
            guard !byRow.isEmpty else { continue }
            let shards = SteeringTable.shardCount
            for (name, rows) in byRow {
                var perLocation = seen[part.names[name]] ?? [Double](repeating: 0, count: weights.count)
                for cell in part.rowOfCell.indices {
                    let row = Int(part.rowOfCell[cell])
                    guard rows[row] > 0, part.rowWeight[row] > 0 else { continue }
                    let location = cell / shards
                    let weight = (location < weights.count ? weights[location] : 1) / Double(shards)
                    if location < perLocation.count {
                        perLocation[location] += rows[row] * weight / part.rowWeight[row]
                    }
                }
                seen[part.names[name]] = perLocation
            }
        }
        decayed.fold(seen, over: elapsed)
        for name in decayed.keys { rates[name] = decayed.rates(name) }
    }
}

/// One answer-share budget pass over a configuration's steering (`ConfigurationLoader.Steering`):
/// the pairs (name, location class, shard) with demand, their allowed and up sites best first
/// (`candidates`), each site's fresh load figure and water marks, through
/// `AnswerBudgets`. Every such pair gets an answer of its own: its site first, then its next
/// candidates in score order, with the short TTL on a budget edge. So a pair's answer changes
/// only when the budgets move it, never with the full flags the compiler orders by (the
/// builder folds a class whose shards all answer alike back into one class).
extension ConfigurationLoader.Steering {
    /// A (name, location class, shard) pair's budget outcome.
    struct BudgetChoice: Hashable, Sendable {
        var site: Int
        var sites: [String]
        var ttl: UInt32
    }

    /// What one pass saw, for `/metrics` and `/explain`: per site, the share of all demand it
    /// was given and the share it may take below its low-water mark (nil: no estimate).
    struct BudgetFigures: Sendable {
        var assignedShare: [String: Double] = [:]
        var budgetShare: [String: Double] = [:]
        var pairs = 0
        var moved = 0
    }

    /// Runs a pass; returns whether any pair's answer changed (the snapshot needs rebuilding).
    ///
    /// A site whose assignment changed less than a TTL ago (the longest its pairs' answers
    /// carried before the change) is settling: resolvers still hold the answers from before, so
    /// its load figure is the old assignment's. Its capacity is then the estimate from when it
    /// was last settled (`AnswerBudgets.Site`).
    func rebalance(
        health: HealthView, loads: [String: Double], rules: [String: HealthRules], demand: DemandEstimate, now: Double
    ) -> Bool {
        let plan = compiler.plan()
        let policy = compiler.policy
        let siteIndex = siteIndexOf
        let shards = SteeringTable.shardCount
        var keys: [PairKey] = []
        var input: [AnswerBudgets.Pair] = []
        var leaders: [Int] = []
        var wanted: [Int] = []
        // Per site: the longest TTL its pairs' answers carry (how long resolvers may hold them).
        var held = [Double](repeating: 0, count: policy.sites.count)
        var assigned = [Double](repeating: 0, count: policy.sites.count)
        var total = 0.0
        for (name, entry) in plan.names.enumerated() {
            guard let model = policy.models.first(where: { $0.name == entry.labels[0] }),
                let rates = demand.rates[names[name].description]
            else { continue }
            let tenant = entry.labels.count > 1 ? policy.tenants.first { $0.name == entry.labels[1] } : nil
            for location in rates.indices where rates[location] > 1e-6 && location < entry.answerOfClass.count {
                let answer = plan.answers[Int(entry.answerOfClass[location])]
                // Budgets weigh load figures: a pair whose leading site has none keeps the
                // compiler's answer.
                guard !answer.denied, let lead = answer.sites.first, let leader = siteIndex[lead],
                    loads[lead] != nil
                else { continue }
                let candidates = candidates(
                    name: name, location: location, model: model, tenant: tenant, health: health)
                let pairDemand = rates[location] / Double(shards)
                total += pairDemand * Double(shards)
                for shard in 0..<shards {
                    let key = PairKey(name: name, location: location, shard: shard)
                    let current = budgetChoices[key]?.site ?? leader
                    assigned[current] += pairDemand
                    held[current] = max(held[current], Double(budgetChoices[key]?.ttl ?? answer.ttl))
                    keys.append(key)
                    leaders.append(leader)
                    wanted.append(model.answers)
                    input.append(.init(demand: pairDemand, candidates: candidates, current: current))
                }
            }
        }
        let sites = policy.sites.enumerated().map { index, site in
            let marks = rules[site.id] ?? HealthRules()
            let settling = budgetSettling[index].map { now - $0.since < $0.ttl } ?? false
            return AnswerBudgets.Site(
                load: loads[site.id], assigned: assigned[index], lowWater: marks.lowWater, highWater: marks.highWater,
                group: site.tier.rank, full: health[site.id].saturated,
                settlingCapacity: settling ? budgetSettling[index]?.capacity : nil)
        }
        let choices = AnswerBudgets.assign(pairs: input, sites: sites, nearEqual: policy.nearEqualMilliseconds)
        var next: [PairKey: BudgetChoice] = [:]
        var given = [Double](repeating: 0, count: policy.sites.count)
        var moved = 0
        for (position, choice) in choices.enumerated() {
            guard let site = choice.site else { continue }
            given[site] += input[position].demand
            let key = keys[position]
            let entry = plan.names[key.name]
            let answer = plan.answers[Int(entry.answerOfClass[key.location])]
            let chosen = policy.sites[site].id
            // The chosen site, then the pair's next candidates for clients to fail over to (in
            // score order, whatever the full flags: the tail does not flip with them).
            let rest = input[position].candidates.lazy.map(\.site).filter { $0 != site }.prefix(wanted[position] - 1)
            let sitesNamed = [chosen] + rest.map { policy.sites[$0].id }
            let ttl = choice.onEdge ? min(answer.ttl, policy.health.unsettledTTL) : answer.ttl
            next[key] = BudgetChoice(site: site, sites: sitesNamed, ttl: ttl)
            if site != leaders[position] { moved += 1 }
        }
        let capacity = AnswerBudgets.capacities(sites)
        // A site that gained or lost a pair starts settling, with the capacity it had.
        var touched = Set<Int>()
        for (position, choice) in choices.enumerated() where choice.site != input[position].current {
            if let site = choice.site { touched.insert(site) }
            if let site = input[position].current { touched.insert(site) }
        }
        for index in touched where capacity[index].isFinite {
            // A window runs from the first change: once it is over, the site is estimated
            // afresh, however often it changed meanwhile.
            if sites[index].settlingCapacity == nil { budgetSettling[index] = (now, capacity[index], held[index]) }
        }
        var figures = BudgetFigures(pairs: input.count, moved: moved)
        for (index, site) in policy.sites.enumerated() where total > 0 {
            figures.assignedShare[site.id] = given[index] / total
            if capacity[index].isFinite {
                figures.budgetShare[site.id] = capacity[index] * sites[index].lowWater / total
            }
        }
        budgetFigures = figures
        let changed = next != budgetChoices
        budgetChoices = next
        return changed
    }

    /// The sites a pair may be sent to, best first with their scores: the allowed sites that
    /// host the model, in the order the decider gives them with every site up and room
    /// everywhere (sovereignty, tier and size applied; near-equal sites in its weighted
    /// order), read once per (name, location class); then those up with the model now, the
    /// best 32 (room enough to spill over into). Full sites stand where their score puts them:
    /// budgets weigh their load rather than setting them last.
    private func candidates(
        name: Int, location: Int, model: Model, tenant: Tenant?, health: HealthView
    ) -> [(site: Int, score: Double)] {
        let key = name * compiler.geography.locations.count + location
        let eligible: [(site: Int, score: Double)]
        if let known = candidateCache[key] {
            eligible = known
        } else {
            let decision = referenceDecider.decide(
                model: model, tenant: tenant, location: compiler.geography.locations[location])
            eligible = decision.trace.filter(\.kept).compactMap { trace in
                siteIndexOf[trace.site].map { ($0, trace.score ?? 0) }
            }
            candidateCache[key] = eligible
        }
        let sites = compiler.policy.sites
        return Array(
            eligible.lazy.filter { candidate in
                let state = health[sites[candidate.site].id]
                return state.up && (state.models?.contains(model.name) ?? true)
            }.prefix(32))
    }

    /// The budget choices as answers per shard, for `table()`: answers appended after the
    /// plan's (numbered from `first`), and per name the shard answers of its classes.
    func budgetAnswers(first: Int, model: (Int) -> Int) -> (answers: [SteeringTable.Answer], shards: [[Int32: [Int32]]])
    {
        let plan = compiler.plan()
        let policy = compiler.policy
        let sites = Dictionary(uniqueKeysWithValues: policy.sites.map { ($0.id, $0) })
        var answers: [SteeringTable.Answer] = []
        var index: [SteeringTable.Answer: Int32] = [:]
        var shards = [[Int32: [Int32]]](repeating: [:], count: plan.names.count)
        for (key, choice) in budgetChoices where key.name < plan.names.count {
            let answers4 = model(key.name)
            var answer = SteeringTable.Answer(kind: .addresses, ttl: choice.ttl)
            for id in choice.sites {
                guard let site = sites[id] else { continue }
                var used = false
                for address in site.ipv4 where answer.ipv4.count < answers4 {
                    answer.ipv4.append(address)
                    used = true
                }
                for address in site.ipv6 where answer.ipv6.count < answers4 {
                    answer.ipv6.append(address)
                    used = true
                }
                if used { answer.sites.append(id) }
            }
            let id: Int32
            if let known = index[answer] {
                id = known
            } else {
                id = Int32(first + answers.count)
                index[answer] = id
                answers.append(answer)
            }
            let entry = plan.names[key.name]
            var row =
                shards[key.name][Int32(key.location)]
                ?? [Int32](repeating: entry.answerOfClass[key.location], count: SteeringTable.shardCount)
            row[key.shard] = id
            shards[key.name][Int32(key.location)] = row
        }
        return (answers, shards)
    }
}
