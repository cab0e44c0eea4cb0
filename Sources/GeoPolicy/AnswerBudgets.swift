/// Answer-share budgets: which site each (location class, name) pair is answered with when
/// sites have a load figure and the pairs a demand. A DNS answer hands a share of demand to a
/// site for a TTL; a site's headroom is a budget of demand it may still be given.
///
/// - A site's capacity in demand units is estimated from what it was given and the load that
///   came of it (`assigned / load`); a site with no load figure yet borrows the median estimate
///   of its tier.
/// - Hysteresis by the water marks: a pair keeps its site while the site stays at or below its
///   high-water mark; a site above it sheds pairs down to its low-water mark (not below), the
///   pairs that lose least by moving (least added latency) first; new and moved pairs go to
///   their best candidate with room (not full, below its high-water mark, within capacity:
///   `hasRoom`), the pairs that would lose most if they did not get their best placed first; a
///   pair answered from a farther site moves back when its better site has room again.
/// - Candidates are the sites the policy allows for the pair, best first: budgets only reorder
///   within them (sovereignty stays closed). With no room anywhere, a pair goes to the candidate
///   with the most room left (or least overload).
public enum AnswerBudgets {
    public struct Pair: Sendable {
        /// Demand in any unit shared by every pair (queries × TTL from the data plane).
        public var demand: Double
        /// Allowed, up sites that host the name, best first, with their scores (milliseconds).
        public var candidates: [(site: Int, score: Double)]
        /// The site the pair is answered with now, if any.
        public var current: Int?
        public init(demand: Double, candidates: [(site: Int, score: Double)], current: Int?) {
            (self.demand, self.candidates, self.current) = (demand, candidates, current)
        }
    }

    public struct Site: Sendable {
        /// The latest load figure (0 = idle, 1 = full); nil: unknown or stale (keeps what it
        /// has, gets nothing new).
        public var load: Double?
        /// The demand the current assignment gives it (the sum over the pairs at it).
        public var assigned: Double
        public var lowWater: Double
        public var highWater: Double
        /// Sites of one group (a tier) share the estimate for sites without one.
        public var group: Int
        /// The monitor's full flag: the load went above the high-water mark and has not yet
        /// come back below the low-water mark. A full site takes no new pairs.
        public var full: Bool
        /// The site's capacity estimate from when it was last settled, while its assignment
        /// changed less than a TTL ago: its load figure still shows the answers handed out
        /// before, so it is not read as the outcome of the current assignment (that would
        /// shed again what was just shed). Nil: settled; the estimate is `assigned / load`.
        public var settlingCapacity: Double?
        public init(
            load: Double?, assigned: Double, lowWater: Double, highWater: Double, group: Int, full: Bool = false,
            settlingCapacity: Double? = nil
        ) {
            (self.load, self.assigned, self.group, self.full) = (load, assigned, group, full)
            (self.lowWater, self.highWater, self.settlingCapacity) = (lowWater, highWater, settlingCapacity)
        }
    }

    /// The outcome for one pair: its site (nil: no candidate) and whether it sits on a budget
    /// edge (moved now, or at a site between its water marks), for a short TTL.
    public struct Choice: Hashable, Sendable {
        public var site: Int?
        public var onEdge: Bool
        public init(site: Int?, onEdge: Bool) {
            self.site = site
            self.onEdge = onEdge
        }
    }

    /// Estimated demand each site can take at full load.
    public static func capacities(_ sites: [Site]) -> [Double] {
        var known: [Int: [Double]] = [:]
        var estimate = [Double?](repeating: nil, count: sites.count)
        for (index, site) in sites.enumerated() {
            if let settling = site.settlingCapacity {
                estimate[index] = settling
                continue
            }
            guard let load = site.load, load > 0.02, site.assigned > 0 else { continue }
            estimate[index] = site.assigned / load
            known[site.group, default: []].append(site.assigned / load)
        }
        let all = known.values.flatMap { $0 }
        func median(_ values: [Double]) -> Double? { values.isEmpty ? nil : values.sorted()[values.count / 2] }
        return sites.indices.map { index in
            if let value = estimate[index] { return value }
            // An idle site: the median of its group, else of all, else room without bound.
            return median(known[sites[index].group] ?? []) ?? median(all) ?? .infinity
        }
    }

    public static func assign(pairs: [Pair], sites: [Site], nearEqual: Double) -> [Choice] {
        let capacity = capacities(sites)
        var total = [Double](repeating: 0, count: sites.count)
        var choices = [Choice](repeating: Choice(site: nil, onEdge: false), count: pairs.count)
        var unplaced: [Int] = []
        func regret(_ pair: Pair) -> Double {
            pair.candidates.count > 1 ? pair.candidates[1].score - pair.candidates[0].score : .infinity
        }
        func score(_ pair: Pair, _ site: Int) -> Double? { pair.candidates.first { $0.site == site }?.score }

        // Keep: every pair stays where it is while its site is still a candidate.
        var kept: [[Int]] = Array(repeating: [], count: sites.count)
        for (index, pair) in pairs.enumerated() {
            if let current = pair.current, score(pair, current) != nil {
                kept[current].append(index)
                total[current] += pair.demand
            } else {
                unplaced.append(index)
            }
        }
        // Shed: a site over its high-water mark gives up pairs down to its low-water mark, those
        // that lose least by moving first; it takes none back in this pass.
        var shed = Set<Int>()
        for site in sites.indices where !kept[site].isEmpty {
            guard let load = sites[site].load, capacity[site].isFinite else { continue }
            let projected = total[site] / capacity[site]
            // A settling site's load figure lags its assignment: only the projection counts.
            let measured = sites[site].settlingCapacity == nil ? load : 0
            guard measured > sites[site].highWater || projected > sites[site].highWater else { continue }
            let target = sites[site].lowWater * capacity[site]
            let order = kept[site].sorted { movingCost(pairs[$0], from: site) < movingCost(pairs[$1], from: site) }
            var keep: [Int] = []
            for index in order {
                // Down to the low-water mark, not below it (the site stays full, between its
                // marks, and takes nothing new), unless it is still over its capacity.
                let after = total[site] - pairs[index].demand
                if total[site] > target, after >= target || total[site] > capacity[site],
                    pairs[index].candidates.count > 1
                {
                    total[site] -= pairs[index].demand
                    unplaced.append(index)
                } else {
                    keep.append(index)
                }
            }
            kept[site] = keep
            if keep.count < order.count { shed.insert(site) }
        }
        var sites = sites
        for site in shed { sites[site].full = true }
        for site in sites.indices {
            for index in kept[site] {
                choices[index] = Choice(site: site, onEdge: isBetweenMarks(sites[site], total[site], capacity[site]))
            }
        }
        // Place: the pairs that would lose most without their best go first.
        unplaced.sort { (regret(pairs[$0]), pairs[$0].demand, -$0) > (regret(pairs[$1]), pairs[$1].demand, -$1) }
        for index in unplaced {
            let pair = pairs[index]
            guard !pair.candidates.isEmpty else { continue }
            let roomy = pair.candidates.first {
                hasRoom(sites[$0.site], total[$0.site], capacity[$0.site], pair.demand)
            }
            let chosen =
                roomy?.site
                ?? pair.candidates.min {
                    (total[$0.site] + pair.demand) / capacity[$0.site]
                        < (total[$1.site] + pair.demand) / capacity[$1.site]
                }!.site
            total[chosen] += pair.demand
            choices[index] = Choice(site: chosen, onEdge: true)
        }
        // Return: a pair at a farther site moves to a better one with room below low water.
        for (index, pair) in pairs.enumerated() {
            guard let site = choices[index].site, let here = score(pair, site),
                let better = pair.candidates.first(where: { candidate in
                    candidate.score < here - nearEqual
                        && hasRoom(sites[candidate.site], total[candidate.site], capacity[candidate.site], pair.demand)
                })
            else { continue }
            total[site] -= pair.demand
            total[better.site] += pair.demand
            choices[index] = Choice(site: better.site, onEdge: true)
        }
        return choices
    }

    /// Whether a site may be given `demand` more: it has a fresh load figure, is not full (nor
    /// shedding in this pass), is still below its high-water mark, and stays below halfway from
    /// that mark to its capacity. A site with room is filled until it passes the mark; then it
    /// is full, sheds to its low-water mark and holds there (the marks' band is the hysteresis).
    static func hasRoom(_ site: Site, _ total: Double, _ capacity: Double, _ demand: Double) -> Bool {
        site.load != nil && !site.full && total < site.highWater * capacity
            && total + demand <= (1 + site.highWater) / 2 * capacity
    }

    /// What moving `pair` off `site` costs it: the added latency to its best other candidate.
    static func movingCost(_ pair: Pair, from site: Int) -> Double {
        let here = pair.candidates.first { $0.site == site }?.score ?? 0
        let next = pair.candidates.first { $0.site != site }?.score ?? .infinity
        return next - here
    }

    static func isBetweenMarks(_ site: Site, _ total: Double, _ capacity: Double) -> Bool {
        guard capacity.isFinite, capacity > 0 else { return false }
        let load = total / capacity
        return load >= site.lowWater && load <= site.highWater
    }
}
