import GeoPolicy
import TDNTestSupport
import Testing

/// The budget assignment on its own: capacities from load, shedding, placing, returning.
@Suite("Answer-share budgets")
struct AnswerBudgetsTests {
    static func site(load: Double?, assigned: Double, group: Int = 0, full: Bool = false) -> AnswerBudgets.Site {
        AnswerBudgets.Site(load: load, assigned: assigned, lowWater: 0.75, highWater: 0.9, group: group, full: full)
    }

    /// The demand at each site once `choices` are applied.
    static func totals(_ pairs: [AnswerBudgets.Pair], _ choices: [AnswerBudgets.Choice], sites: Int) -> [Double] {
        var totals = [Double](repeating: 0, count: sites)
        for (pair, choice) in zip(pairs, choices) { if let site = choice.site { totals[site] += pair.demand } }
        return totals
    }

    @Test func anOverloadedSiteShedsToItsLowWaterMarkLeastRegretFirst() {
        // Site 0 was given 300 and reports load 1.5: it takes 200 at full load, 150 at low water.
        // Ten pairs of 30 each; pair i's next site is i ms farther.
        let pairs = (0..<10).map { index in
            AnswerBudgets.Pair(
                demand: 30, candidates: [(0, 10), (1, 10 + Double(index + 1))], current: 0)
        }
        let sites = [Self.site(load: 1.5, assigned: 300), Self.site(load: 0.1, assigned: 30)]
        let choices = AnswerBudgets.assign(pairs: pairs, sites: sites, nearEqual: 0)
        let totals = Self.totals(pairs, choices, sites: 2)
        // Down to its low-water mark and not below, and nothing shed comes back in the pass.
        #expect(totals[0] == 150, "\(totals)")
        // The pairs that lose least by moving (the first ones) moved.
        let moved = choices.indices.filter { choices[$0].site == 1 }
        #expect(moved == Array(0..<moved.count), "\(moved)")
        #expect(moved.allSatisfy { choices[$0].onEdge })
    }

    @Test func choicesStayWithinTheCandidatesWhateverTheLoad() {
        var random = SeededRandom(state: 11)
        for round in 0..<200 {
            let siteCount = Int.random(in: 1...8, using: &random)
            let sites = (0..<siteCount).map { _ in
                Self.site(
                    load: Bool.random(using: &random) ? Double.random(in: 0...2, using: &random) : nil,
                    assigned: Double.random(in: 0...500, using: &random), group: Int.random(in: 0...2, using: &random))
            }
            let pairs = (0..<Int.random(in: 0...30, using: &random)).map { _ in
                let allowed = (0..<siteCount).filter { _ in Bool.random(using: &random) }
                return AnswerBudgets.Pair(
                    demand: Double.random(in: 0...100, using: &random),
                    candidates: allowed.map { ($0, Double.random(in: 1...200, using: &random)) }
                        .sorted { $0.1 < $1.1 },
                    current: Bool.random(using: &random) ? Int.random(in: 0..<siteCount, using: &random) : nil)
            }
            let choices = AnswerBudgets.assign(pairs: pairs, sites: sites, nearEqual: 5)
            for (pair, choice) in zip(pairs, choices) {
                if pair.candidates.isEmpty {
                    #expect(choice.site == nil, "round \(round): a pair with no allowed site got one")
                } else {
                    let site = choice.site ?? -1
                    #expect(pair.candidates.contains { $0.site == site }, "round \(round): outside the candidates")
                }
            }
        }
    }

    @Test func unchangedInputsGiveUnchangedChoices() {
        // A settled state: each site full (it passed its high-water mark) and back between its
        // water marks, half the pairs at their second site (no full best takes them back). Fed
        // its own outcome, the assignment stays put.
        let pairs = (0..<12).map { index in
            AnswerBudgets.Pair(
                demand: 10, candidates: [(index % 3, 5), ((index + 1) % 3, 9), ((index + 2) % 3, 20)],
                current: index.isMultiple(of: 2) ? index % 3 : (index + 1) % 3)
        }
        let sites = (0..<3).map { _ in Self.site(load: 0.8, assigned: 40, full: true) }
        let first = AnswerBudgets.assign(pairs: pairs, sites: sites, nearEqual: 0)
        #expect(first.map(\.site) == pairs.map(\.current))
        // The next round starts from that outcome: the pairs where they were put, each site
        // given what they sum to. Nothing moves.
        let next = zip(pairs, first).map { pair, choice in
            AnswerBudgets.Pair(demand: pair.demand, candidates: pair.candidates, current: choice.site)
        }
        let totals = Self.totals(pairs, first, sites: 3)
        let nextSites = totals.map { Self.site(load: 0.8 * $0 / 40, assigned: $0, full: true) }
        let again = AnswerBudgets.assign(pairs: next, sites: nextSites, nearEqual: 0)
        #expect(again.map(\.site) == first.map(\.site))
    }

    @Test func aPairReturnsToItsBestSiteOnceItHasRoom() {
        // Four pairs sit at the farther site 1; site 0 is nearly idle with a known capacity of
        // 100 (10 given, load 0.1).
        let pairs = (0..<4).map { _ in AnswerBudgets.Pair(demand: 30, candidates: [(0, 5), (1, 40)], current: 1) }
        let sites = [Self.site(load: 0.1, assigned: 10), Self.site(load: 0.5, assigned: 120)]
        let choices = AnswerBudgets.assign(pairs: pairs, sites: sites, nearEqual: 5)
        // Site 0 is filled while below its high-water mark (90) and never beyond halfway from
        // it to its capacity (95): three return (90), the fourth stays.
        #expect(choices.filter { $0.site == 0 }.count == 3, "\(choices)")
    }
}
