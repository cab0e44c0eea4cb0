import Dispatch

#if canImport(Glibc)
import Glibc
#endif

/// The steering control plane: one decision per (steered name, location class), kept between
/// health changes so that a change recomputes only the pairs whose answer it can move.
///
/// A decision reads the eligible sites best first (a k-d tree walk, `SiteIndex`) and stops as
/// soon as nothing unread can enter the answer; the sites it read are its inputs. A site that
/// was not read ranks below everything the answer depends on, so no change of that site's state
/// can change the answer. Each site therefore keeps the pairs that read it, and a health change
/// recomputes the pairs of the changed sites only. `Decider` stays the reference: the compiler's
/// answers equal its decisions (property-tested).
///
/// Not thread-safe: one thread at a time (the daemon compiles under its snapshot lock).
public final class SteeringCompiler: @unchecked Sendable {
    public let policy: Policy
    public let geography: SteeringGeography
    public private(set) var health: HealthView
    let index: SiteIndex
    private let decider: IndexedDecider
    /// A second decider for the second thread of large recomputes (made on first need), and
    /// how many pairs make a recompute large (tests lower it).
    private var helper: IndexedDecider?
    var parallelAbove = 2048
    /// CPU time recomputes spent on threads other than the caller's, in total.
    public private(set) var otherThreadsCPUSeconds = 0.0

    /// CPU time of the calling thread, in seconds.
    public static func threadCPUSeconds() -> Double {
        var now = timespec()
        clock_gettime(CLOCK_THREAD_CPUTIME_ID, &now)
        return Double(now.tv_sec) + Double(now.tv_nsec) / 1e9
    }
    private let classCount: Int
    private var states: SiteStates

    /// Distinct answers seen so far; pairs hold indices into it.
    private var pool: [SteeringAnswer] = []
    private var poolIndex: [SteeringAnswer: Int32] = [:]
    private var pooledAfterCompaction = 0
    /// Changes when pool indices are renumbered (the plan's answer keys are pool indices).
    private var poolEpoch: UInt64 = 0
    private var cachedPlan: SteeringPlan?
    /// Per pair (`name * classCount + class`): its answer, and the sites its decision read
    /// or tree nodes (`reads` holds them all, one run per pair at `readStart`, `readCount` long; a longer run
    /// than before moves to the end, and the holes are compacted away).
    private var choice: [Int32]
    private var reads: [Int32] = []
    private var readStart: [UInt32]
    private var readCount: [UInt32]
    /// Per site, then per tree node read as a whole (`slot`): pairs that read it. Entries of pairs that no longer read it linger until the
    /// site changes or the lists are rebuilt; an extra entry costs one recompute, never a wrong
    /// answer.
    private var readers: [[UInt32]]
    /// Per pair: the group it depends on as a whole (every eligible site down), or -1; per
    /// group: those pairs (entries linger like `readers`').
    private var pairGroup: [Int32]
    /// Per pair: the sites its answer is made of, and the best site (`IndexedDecider.keys`);
    /// per site: the pairs it keys (entries linger like `readers`').
    private var keys: [[Int32]]
    private var keyed: [[UInt32]]
    private var keyEntries = 0
    private var keyedEntries = 0
    private var groupReaders: [[UInt32]] = []
    private var readerEntries = 0
    private var readEntries = 0
    private var stamp: [UInt32]
    private var stampValue: UInt32 = 0
    private var siteMark: [UInt32]
    private var siteMarkValue: UInt32 = 0

    /// Compiles every pair under `health`.
    public init(policy: Policy, geography: SteeringGeography, health: HealthView = HealthView()) {
        self.policy = policy
        self.geography = geography
        self.health = health
        index = SiteIndex(policy: policy)
        decider = IndexedDecider(index: index, locations: geography.locations)
        classCount = geography.locations.count
        states = SiteStates(index: index, view: health, epoch: 0)
        let pairs = decider.names.count * classCount
        choice = [Int32](repeating: 0, count: pairs)
        readStart = [UInt32](repeating: 0, count: pairs)
        readCount = [UInt32](repeating: 0, count: pairs)
        pairGroup = [Int32](repeating: -1, count: pairs)
        keys = [[Int32]](repeating: [], count: pairs)
        keyed = [[UInt32]](repeating: [], count: index.sites.count)
        readers = [[UInt32]](repeating: [], count: index.sites.count)
        stamp = [UInt32](repeating: 0, count: pairs)
        siteMark = [UInt32](repeating: 0, count: index.sites.count)
        for location in 0..<classCount {
            for name in decider.names.indices { recompute(UInt32(name * classCount + location)) }
        }
    }

    /// The number of steered names (`[model]` and `[model, tenant]` labels).
    public var nameCount: Int { decider.names.count }

    /// Moves to `health`, recomputing only the pairs that read a site whose state changed;
    /// returns how many pairs were recomputed.
    @discardableResult
    public func update(health next: HealthView) -> Int {
        let nextStates = SiteStates(index: index, view: next, epoch: states.epoch + 1)
        var changed: [Int] = []
        for site in index.sites.indices where states.states[site] != nextStates.states[site] { changed.append(site) }
        let before = states
        states = nextStates
        health = next
        guard !changed.isEmpty else { return 0 }
        cachedPlan = nil
        stampValue &+= 1
        if stampValue == 0 {
            stamp = [UInt32](repeating: 0, count: stamp.count)
            stampValue = 1
        }
        var affected: [UInt32] = []
        for site in changed {
            if Self.onlyWorse(before.states[site], states.states[site]) {
                // A site that only got worse (down, full, fewer models) moves the answers it is
                // in, and those it anchors (the best site sets the near-equal window); it cannot
                // enter any other answer.
                let kept = collect(keyed[site], into: &affected) { keys[Int($0)].contains(Int32(site)) }
                keyedEntries += kept.count - keyed[site].count
                keyed[site] = kept
            } else {
                // Otherwise every pair that read it, or a tree node above it as a whole.
                collectReaders(of: Int32(site), into: &affected)
                for group in index.groupList where group.isMember[site] {
                    for node in group.tree.path(to: Int32(site)) {
                        collectReaders(of: IndexedDecider.nodeInput(group.nodeBase + Int(node)), into: &affected)
                    }
                }
            }
            for group in groupReaders.indices where index.groupList[group].isMember[site] {
                groupReaders[group] = collect(groupReaders[group], into: &affected) { pairGroup[Int($0)] == group }
            }
        }
        recompute(affected)
        if readerEntries > 2 * readEntries + 1024 { rebuildReaders() }
        if keyedEntries > 2 * keyEntries + 1024 { rebuildKeyed() }
        if pool.count > 2 * pooledAfterCompaction + 4096 { compactPool() }
        return affected.count
    }

    /// The pairs that still read `input` (a site or a tree node) go to `affected`; its list of
    /// readers keeps only them.
    private func collectReaders(of input: Int32, into affected: inout [UInt32]) {
        let slot = slot(input)
        guard slot < readers.count, !readers[slot].isEmpty else { return }
        let kept = collect(readers[slot], into: &affected) { readsInput($0, input) }
        readerEntries += kept.count - readers[slot].count
        readers[slot] = kept
    }

    /// The pairs of a dependency list that still depend (`live`), once each: the list as it
    /// should be kept (stale entries are dropped as lists are used). Each such pair not yet
    /// stamped in this update is stamped and added to `affected`.
    private func collect(_ list: [UInt32], into affected: inout [UInt32], where live: (UInt32) -> Bool) -> [UInt32] {
        var kept: [UInt32] = []
        var seen: Set<UInt32> = []
        for pair in list where live(pair) && seen.insert(pair).inserted {
            kept.append(pair)
            if stamp[Int(pair)] != stampValue {
                stamp[Int(pair)] = stampValue
                affected.append(pair)
            }
        }
        return kept
    }

    /// Whether a site's new state can only take it out of answers: down (whatever else), or
    /// up with no more room and no more models than before; the same unsettled flag (which
    /// sets TTLs). Its last-up time matters only to pairs that depend on a whole group.
    static func onlyWorse(_ old: SiteHealth, _ new: SiteHealth) -> Bool {
        guard old.unsettled == new.unsettled else { return false }
        if !new.up { return true }
        guard old.up, !old.saturated || new.saturated else { return false }
        guard let grown = new.models else { return old.models == nil }
        return old.models.map { grown.isSubset(of: $0) } ?? true
    }

    /// One decision with its inputs, as `apply` records them.
    struct Outcome {
        var answer: SteeringAnswer
        var group: Int32
        var keys: [Int32]
        var read: [Int32]
    }

    private func decide(_ pair: UInt32, with decider: IndexedDecider) -> Outcome {
        let answer = decider.decide(name: Int(pair) / classCount, location: Int(pair) % classCount, states: states)
        return Outcome(answer: answer, group: decider.wholeGroup, keys: decider.keys, read: decider.read)
    }

    /// Decides many pairs on two threads (each with a decider of its own; the groups' figures
    /// for this health are made first, so that the threads only read shared state), then
    /// records the outcomes in order, on this thread.
    private func recompute(_ pairs: [UInt32]) {
        // Location by location, so that the names of a location share walks (`WalkKey`).
        let names = UInt32(decider.names.count)
        let count = UInt32(classCount)
        let pairs = pairs.sorted { ($0 % count) * names + $0 / count < ($1 % count) * names + $1 / count }
        guard pairs.count >= parallelAbove else {
            for pair in pairs { recompute(pair) }
            return
        }
        if helper == nil { helper = IndexedDecider(index: index, locations: geography.locations) }
        for group in index.groupList { group.refresh(states) }
        let deciders = [decider, helper!]
        var outcomes = [Outcome?](repeating: nil, count: pairs.count)
        // Each thread writes its own slots and uses its own decider: no two touch the same memory.
        // CPU spent on threads other than this one is added to `otherThreadsCPUSeconds` (a
        // caller that times its own thread would miss it).
        struct Work: @unchecked Sendable {
            let results: UnsafeMutableBufferPointer<Outcome?>
            let deciders: [IndexedDecider]
            let elsewhere: UnsafeMutablePointer<Double>
            let caller: pthread_t
        }
        let elsewhere = UnsafeMutablePointer<Double>.allocate(capacity: 2)
        elsewhere.initialize(repeating: 0, count: 2)
        defer { elsewhere.deallocate() }
        outcomes.withUnsafeMutableBufferPointer { results in
            let work = Work(results: results, deciders: deciders, elsewhere: elsewhere, caller: pthread_self())
            DispatchQueue.concurrentPerform(iterations: 2) { part in
                let started = Self.threadCPUSeconds()
                // Each thread takes one half: consecutive pairs share walks.
                let half = pairs.count / 2
                for position in (part == 0 ? 0..<half : half..<pairs.count) {
                    work.results[position] = decide(pairs[position], with: work.deciders[part])
                }
                if pthread_equal(pthread_self(), work.caller) == 0 {
                    work.elsewhere[part] = Self.threadCPUSeconds() - started
                }
            }
        }
        otherThreadsCPUSeconds += elsewhere[0] + elsewhere[1]
        for (position, pair) in pairs.enumerated() { apply(pair, outcomes[position]!) }
    }

    private func recompute(_ pair: UInt32) { apply(pair, decide(pair, with: decider)) }

    private func apply(_ pair: UInt32, _ outcome: Outcome) {
        let answer = outcome.answer
        let id: Int32
        if let known = poolIndex[answer] {
            id = known
        } else {
            id = Int32(pool.count)
            pool.append(answer)
            poolIndex[answer] = id
        }
        choice[Int(pair)] = id
        let group = outcome.group
        if group >= 0 && pairGroup[Int(pair)] != group {
            while groupReaders.count <= Int(group) { groupReaders.append([]) }
            groupReaders[Int(group)].append(pair)
        }
        pairGroup[Int(pair)] = group
        let key = outcome.keys
        for site in key where !keys[Int(pair)].contains(site) {
            keyed[Int(site)].append(pair)
            keyedEntries += 1
        }
        keyEntries += key.count - keys[Int(pair)].count
        keys[Int(pair)] = key
        let after = outcome.read
        // New readers only: a site that was read before already lists this pair.
        let count = Int(readCount[Int(pair)])
        siteMarkValue &+= 1
        if siteMarkValue == 0 {
            siteMark = [UInt32](repeating: 0, count: siteMark.count)
            siteMarkValue = 1
        }
        if readers.count < index.sites.count + index.nodeCount {
            let slots = index.sites.count + index.nodeCount
            readers += [[UInt32]](repeating: [], count: slots - readers.count)
            siteMark += [UInt32](repeating: 0, count: slots - siteMark.count)
        }
        let start = Int(readStart[Int(pair)])
        for position in start..<start + count { siteMark[slot(reads[position])] = siteMarkValue }
        for input in after where siteMark[slot(input)] != siteMarkValue {
            readers[slot(input)].append(pair)
            readerEntries += 1
        }
        readEntries += after.count - count
        if after.count > count {
            if reads.count + after.count > Int(UInt32.max) || reads.count > 2 * readEntries + 65536 { compactReads() }
            readStart[Int(pair)] = UInt32(reads.count)
            reads += after
        } else {
            let start = Int(readStart[Int(pair)])
            for (offset, site) in after.enumerated() { reads[start + offset] = site }
        }
        readCount[Int(pair)] = UInt32(after.count)
    }

    /// Where an entry of `reads` (a site, or a tree node: `IndexedDecider.nodeInput`) keeps its
    /// readers: sites first, then the nodes of all groups.
    @inline(__always)
    private func slot(_ input: Int32) -> Int { input >= 0 ? Int(input) : index.sites.count + Int(-1 - input) }

    private func readsInput(_ pair: UInt32, _ input: Int32) -> Bool {
        let start = Int(readStart[Int(pair)])
        for position in start..<start + Int(readCount[Int(pair)]) where reads[position] == input { return true }
        return false
    }

    /// Drops the holes left by runs that moved.
    private func compactReads() {
        var packed: [Int32] = []
        packed.reserveCapacity(readEntries + 1024)
        for pair in readStart.indices {
            let start = Int(readStart[pair])
            readStart[pair] = UInt32(packed.count)
            packed += reads[start..<start + Int(readCount[pair])]
        }
        reads = packed
    }

    private func rebuildKeyed() {
        keyed = [[UInt32]](repeating: [], count: index.sites.count)
        for (pair, sites) in keys.enumerated() {
            for site in sites { keyed[Int(site)].append(UInt32(pair)) }
        }
        keyedEntries = keyEntries
    }

    private func rebuildReaders() {
        readers = [[UInt32]](repeating: [], count: index.sites.count + index.nodeCount)
        readerEntries = 0
        for pair in readStart.indices {
            let start = Int(readStart[pair])
            for input in reads[start..<start + Int(readCount[pair])] { readers[slot(input)].append(UInt32(pair)) }
            readerEntries += Int(readCount[pair])
        }
    }

    /// Forgets answers no pair gives any more.
    private func compactPool() {
        var renumbered = [Int32](repeating: -1, count: pool.count)
        var kept: [SteeringAnswer] = []
        for (pair, id) in choice.enumerated() {
            if renumbered[Int(id)] < 0 {
                renumbered[Int(id)] = Int32(kept.count)
                kept.append(pool[Int(id)])
            }
            choice[pair] = renumbered[Int(id)]
        }
        pool = kept
        pooledAfterCompaction = kept.count
        poolEpoch &+= 1
        poolIndex = [:]
        for (id, answer) in pool.enumerated() { poolIndex[answer] = Int32(id) }
    }

    /// The current decisions as a plan: answers numbered in the order the names and classes
    /// first give them, exactly as `SteeringPlanner.plan` numbers them.
    public func plan() -> SteeringPlan {
        if let cachedPlan { return cachedPlan }
        var plan = SteeringPlan(zone: policy.zone)
        plan.answerKeyEpoch = poolEpoch
        plan.locations = geography.locations
        plan.v4 = geography.v4
        plan.v6 = geography.v6
        var dense = [Int32](repeating: -1, count: pool.count)
        for (name, steered) in decider.names.enumerated() {
            var row = [Int32](repeating: 0, count: classCount)
            for location in 0..<classCount {
                let id = Int(choice[name * classCount + location])
                if dense[id] < 0 {
                    dense[id] = Int32(plan.answers.count)
                    plan.answers.append(pool[id])
                    plan.answerKeys.append(Int32(id))
                }
                row[location] = dense[id]
            }
            plan.names.append((steered.labels, row))
        }
        cachedPlan = plan
        return plan
    }
}

/// Site states by site index, as decisions read them.
struct SiteStates {
    var states: [SiteHealth]
    var anyUnsettled: Bool
    /// Which health state this is (groups cache figures per epoch).
    var epoch: Int

    init(index: SiteIndex, view: HealthView, epoch: Int) {
        self.epoch = epoch
        states = index.sites.map { view[$0.id] }
        anyUnsettled = states.contains { $0.unsettled }
    }
}

/// The decision of `Decider.decide`, computed from the index: same ranking, tie-breaks,
/// near-equal spread, TTLs and denials, without reading sites that cannot matter.
final class IndexedDecider {
    struct SteeredName {
        var labels: [String]
        var model: Int
        var tenant: Tenant?
    }

    /// What a location class brings to every decision about it.
    struct Context {
        var location: Location
        var point: (Double, Double, Double)?
        var overrides: [(site: Int32, rtt: Double)]
        var description: String
        var endpoint: Denial.Endpoint?
    }

    struct Candidate {
        var site: Int32
        var score: Double
        var saturated: Bool
    }

    let index: SiteIndex
    let names: [SteeredName]
    private let locations: [Location]
    private let reference: Decider
    private let fallback: Set<Int32>
    private var contexts: [Context?]
    /// Eligible sites per name and client country ("" for unknown).
    private var groups: [[String: EligibleSites]]
    private var heap = RankingHeap()
    private var overrideMark: [UInt32]
    private var mark: UInt32 = 0
    /// The sites the last decision read (its inputs; their scores are in its `Walk`). A
    /// negative entry is a tree node read as a whole, all of its sites down or without the model
    /// and settled (`nodeInput`): the decision changes only if one of them changes.
    private(set) var read: [Int32] = []

    /// The entry of `read` for node `node` of all groups' nodes (`SiteIndex.nodeCount`).
    static func nodeInput(_ node: Int) -> Int32 { Int32(-1 - node) }
    /// The group the last decision depends on as a whole (-1: only on the sites it read).
    private(set) var wholeGroup: Int32 = -1
    /// The sites of the last answer and its best candidate (every candidate when the answer
    /// is empty): a site that only gets worse changes the answer only if it is one of these.
    private(set) var keys: [Int32] = []
    /// The walks of the location being decided, for this health.
    private var memo: [WalkKey: Walk] = [:]
    private var memoLocation = -1
    private var memoEpoch = -1
    private var usable: [Candidate] = []
    private var full: [Candidate] = []

    init(index: SiteIndex, locations: [Location]) {
        self.index = index
        self.locations = locations
        let policy = index.policy
        reference = Decider(policy: policy)
        var names: [SteeredName] = []
        for (modelIndex, model) in policy.models.enumerated() {
            names.append(SteeredName(labels: [model.name], model: modelIndex, tenant: nil))
            for tenant in policy.tenants where tenant.models?.contains(model.name) ?? true {
                names.append(SteeredName(labels: [model.name, tenant.name], model: modelIndex, tenant: tenant))
            }
        }
        self.names = names
        fallback = Set(policy.health.fallback.compactMap { index.indexOf[$0] })
        contexts = [Context?](repeating: nil, count: locations.count)
        groups = [[String: EligibleSites]](repeating: [:], count: names.count)
        overrideMark = [UInt32](repeating: 0, count: index.sites.count)
    }

    private func context(_ location: Int) -> Context {
        if let known = contexts[location] { return known }
        let place = locations[location]
        var byRTT: [Int32: Double] = [:]
        var order: [Int32] = []
        func take(_ from: String?) {
            guard let from, let entries = index.latency[from] else { return }
            for (site, rtt) in entries {
                if byRTT[site] == nil { order.append(site) }
                byRTT[site] = rtt
            }
        }
        // The network's entry wins over the country's (`Decider.rtt`).
        take(place.country)
        take(place.network)
        let policy = index.policy
        let made = Context(
            location: place, point: place.coordinates.map(SiteIndex.unitVector),
            overrides: order.map { ($0, byRTT[$0]!) }, description: place.description,
            endpoint: place.country.flatMap { country in
                policy.jurisdictions(of: country).lazy.compactMap { policy.denial.endpoints[$0] }.first
            })
        contexts[location] = made
        return made
    }

    private func group(_ name: Int, _ context: Context) -> EligibleSites {
        let key = context.location.country ?? ""
        if let known = groups[name][key] { return known }
        let steered = names[name]
        let allowed = reference.allowedJurisdictions(
            model: index.policy.models[steered.model], tenant: steered.tenant, location: context.location)
        let made = index.group(model: steered.model, allowed: allowed)
        groups[name][key] = made
        return made
    }

    func decide(name: Int, location: Int, states: SiteStates) -> SteeringAnswer {
        let policy = index.policy
        let steered = names[name]
        let model = policy.models[steered.model]
        let context = context(location)
        let eligible = group(name, context)
        eligible.refresh(states)
        if eligible.usableCount == 0 {
            read = []
            wholeGroup = Int32(eligible.id)
            return allDown(eligible, context: context, model: model, states: states)
        }
        wholeGroup = -1
        let walkKey = WalkKey(walk: eligible.walkKey, wanted: model.answers)
        if memoLocation != location || memoEpoch != states.epoch {
            memo.removeAll(keepingCapacity: true)
            (memoLocation, memoEpoch) = (location, states.epoch)
        }
        let walked: Walk
        if let known = memo[walkKey] {
            walked = known
        } else {
            walked = walk(eligible, context: context, wanted: model.answers, states: states)
            memo[walkKey] = walked
        }
        read = walked.read
        return finish(walked.candidates, context: context, model: model) { chosen, worst in
            guard states.anyUnsettled else { return false }
            return walked.read.indices.contains { position in
                walked.read[position] >= 0 && states.states[Int(walked.read[position])].unsettled
                    && (chosen.contains(walked.read[position]) || walked.readScores[position] <= worst)
            }
        }
    }

    /// What a walk found: the candidates in ranking order (usable first, then full), and what it
    /// read (`read`) with the scores (+infinity for a settled non-candidate read unranked: only
    /// unsettled sites' scores are compared).
    struct Walk {
        var candidates: [Candidate]
        var read: [Int32]
        var readScores: [Double]
    }

    /// Groups that walk alike (`EligibleSites.walkKey`) and answers of the same size read the
    /// same sites in the same order for one location and health: names of one location share
    /// one walk (the models of a tier, a tenant's names beside the public ones).
    struct WalkKey: Hashable {
        var walk: Int
        var wanted: Int
    }

    /// The best-first walk of `eligible` for one location: candidates in exact ranking order
    /// until the near-equal group is complete and the sites read can fill the answer, then on
    /// through ties of the worst candidate read (a site that scores no worse than an answer's
    /// worst is an input: an unsettled one shortens the TTL). Depends on the model only through
    /// the group's candidacy and `wanted`, so that names can share it.
    private func walk(_ eligible: EligibleSites, context: Context, wanted: Int, states: SiteStates) -> Walk {
        let policy = index.policy
        mark &+= 1
        if mark == 0 {
            overrideMark = [UInt32](repeating: 0, count: overrideMark.count)
            mark = 1
        }
        let mark = self.mark
        // The scratch space moves into locals for the decision (and back after it): locals are
        // checked for exclusive access at compile time, properties of a class at run time.
        var heap = self.heap
        var usable = self.usable
        var full = self.full
        var overrideMark = self.overrideMark
        (self.heap, self.usable, self.full) = (RankingHeap(), [], [])
        self.overrideMark = []
        defer {
            (self.heap, self.usable, self.full) = (heap, usable, full)
            self.overrideMark = overrideMark
        }
        heap.removeAll()
        var read: [Int32] = []
        var readScores: [Double] = []
        usable.removeAll(keepingCapacity: true)
        full.removeAll(keepingCapacity: true)

        func siteEntry(_ site: Int32, _ score: Double) -> RankingHeap.Entry {
            RankingHeap.Entry(
                score: score, cost: index.cost[Int(site)], rank: index.rank[Int(site)], kind: .site, value: site)
        }
        for (site, rtt) in context.overrides where eligible.isMember[Int(site)] {
            overrideMark[Int(site)] = mark
            heap.push(siteEntry(site, rtt + index.penalty[Int(site)]))
        }
        let tree = eligible.tree
        let candidatesBelow = eligible.candidatesBelow
        let liveBelow = eligible.liveBelow
        if let point = context.point {
            if !tree.nodes.isEmpty {
                heap.push(
                    RankingHeap.Entry(
                        score: tree.bound(0, point), cost: -.infinity, rank: .min, kind: .node, value: 0))
            }
        } else if let first = eligible.unlocated.first {
            var entry = siteEntry(first, 250 + index.penalty[Int(first)])
            entry.kind = .cursor
            entry.value = 0
            heap.push(entry)
        }

        var v4Have = 0
        var v6Have = 0
        var v4Seen = 0
        var v6Seen = 0
        let near = policy.nearEqualMilliseconds
        func note(_ site: Int32, _ score: Double) -> SiteHealth {
            read.append(site)
            readScores.append(score)
            if index.ipv4Count[Int(site)] > 0 { v4Seen += 1 }
            if index.ipv6Count[Int(site)] > 0 { v6Seen += 1 }
            return states.states[Int(site)]
        }
        /// Exactly `Decider.rtt` plus the tier penalty, so that scores are equal.
        func located(_ site: Int32) -> Double {
            2 + context.location.coordinates!.distance(to: index.coordinates[Int(site)]) / 100
                + index.penalty[Int(site)]
        }
        /// A site of the tree that is no candidate (down, or without the model) is an input of
        /// the decision, never part of it: it is read at once, unranked, whatever its score (a
        /// superset of the sites the ranking would reach). Only an unsettled one needs its score.
        func input(_ site: Int32) {
            guard overrideMark[Int(site)] != mark else { return }
            _ = note(site, states.states[Int(site)].unsettled ? located(site) : .infinity)
        }
        /// The next candidate in ranking order (or, from overrides and the unlocated order, the
        /// next site), or nil when every eligible site is read.
        func next() -> (Int32, Double)? {
            while !heap.entries.isEmpty {
                let entry = heap.pop()
                switch entry.kind {
                case .site:
                    return (entry.value, entry.score)
                case .cursor:
                    let position = Int(entry.value)
                    let site = eligible.unlocated[position]
                    if position + 1 < eligible.unlocated.count {
                        let following = eligible.unlocated[position + 1]
                        var more = siteEntry(following, 250 + index.penalty[Int(following)])
                        more.kind = .cursor
                        more.value = Int32(position + 1)
                        heap.push(more)
                    }
                    if overrideMark[Int(site)] != mark { return (site, entry.score) }
                case .node:
                    let id = Int(entry.value)
                    let node = tree.nodes[id]
                    if liveBelow[id] == 0 && context.overrides.isEmpty {
                        // Nothing below can serve or shorten a TTL: the node is one input.
                        read.append(Self.nodeInput(eligible.nodeBase + id))
                        readScores.append(.infinity)
                        v4Seen += Int(node.ipv4Below)
                        v6Seen += Int(node.ipv6Below)
                    } else if candidatesBelow[id] == 0 {
                        for position in Int(node.start)..<Int(node.end) { input(tree.order[position]) }
                    } else if node.left < 0 {
                        for position in Int(node.start)..<Int(node.end) {
                            let site = tree.order[position]
                            guard overrideMark[Int(site)] != mark else { continue }
                            if eligible.isCandidate(states.states[Int(site)]) {
                                heap.push(siteEntry(site, located(site)))
                            } else {
                                input(site)
                            }
                        }
                    } else {
                        let point = context.point!
                        heap.push(
                            RankingHeap.Entry(
                                score: tree.bound(Int(node.left), point), cost: -.infinity, rank: .min, kind: .node,
                                value: node.left))
                        heap.push(
                            RankingHeap.Entry(
                                score: tree.bound(Int(node.right), point), cost: -.infinity, rank: .min, kind: .node,
                                value: node.right))
                    }
                }
            }
            return nil
        }
        while let top = heap.top {
            // Stop once the near-equal group is complete and the sites read can fill the answer:
            // anything unread ranks after all of them.
            if let best = usable.first, top.score - best.score > near,
                v4Have >= wanted || v4Seen == eligible.withIPv4, v6Have >= wanted || v6Seen == eligible.withIPv6
            {
                break
            }
            guard let (site, score) = next() else { break }
            let state = note(site, score)
            let candidate = Candidate(site: site, score: score, saturated: state.saturated)
            // Down or without the model: read (an input), not a candidate; some eligible site
            // can serve (`allDown`).
            guard eligible.isCandidate(state) else { continue }
            if state.saturated {
                full.append(candidate)
            } else {
                usable.append(candidate)
                v4Have += index.ipv4Count[Int(site)]
                v6Have += index.ipv6Count[Int(site)]
            }
        }
        // Read on through ties of the worst candidate (everything scoring less is read): the
        // answer's worst is never worse. No candidate: everything.
        let candidates = usable + full
        let worst = candidates.map(\.score).max() ?? .infinity
        while let top = heap.top, top.score <= worst, let (site, score) = next() { _ = note(site, score) }
        return Walk(candidates: candidates, read: read, readScores: readScores)
    }

    /// Every eligible site is down or lacks the model: the policy's `when-all-down` decides,
    /// from the group's figures for this health (no site is read one by one).
    private func allDown(
        _ eligible: EligibleSites, context: Context, model: Model, states: SiteStates
    )
        -> SteeringAnswer
    {
        let policy = index.policy
        func candidate(_ site: Int32) -> Candidate {
            Candidate(site: site, score: score(site, context), saturated: states.states[Int(site)].saturated)
        }
        var candidates: [Candidate] = []
        if eligible.downCount > 0 {
            switch policy.health.whenAllDown {
            case .lastKnownGood: candidates = eligible.latest.map(candidate)
            case .fallback:
                candidates = fallback.filter { eligible.isMember[Int($0)] && !states.states[Int($0)].up }.map(candidate)
            case .deny: break
            }
            candidates.sort {
                ($0.saturated ? 1 : 0, $0.score, index.cost[Int($0.site)], index.rank[Int($0.site)])
                    < ($1.saturated ? 1 : 0, $1.score, index.cost[Int($1.site)], index.rank[Int($1.site)])
            }
        }
        return finish(candidates, context: context, model: model) { chosen, worst in
            eligible.unsettled.contains { chosen.contains($0) || score($0, context) <= worst }
        }
    }

    /// A site's score for a client: `Decider.rtt` (latency map, else distance, else 250 ms)
    /// plus the tier penalty, computed the same way so that the numbers are equal.
    private func score(_ site: Int32, _ context: Context) -> Double {
        if let entry = context.overrides.first(where: { $0.site == site }) {
            return entry.rtt + index.penalty[Int(site)]
        }
        if let from = context.location.coordinates {
            return (2 + from.distance(to: index.coordinates[Int(site)]) / 100) + index.penalty[Int(site)]
        }
        return 250 + index.penalty[Int(site)]
    }

    /// The ranking's end: near-equal spread, addresses, TTL and denial, as `Decider` does them.
    private func finish(
        _ candidates: [Candidate], context: Context, model: Model,
        unsettled: (_ chosen: [Int32], _ worst: Double) -> Bool
    ) -> SteeringAnswer {
        let policy = index.policy
        let near = policy.nearEqualMilliseconds
        let wanted = model.answers
        let best = candidates.first?.site
        // Near-equal sites go first in rendezvous order (highest first; ties in ranking order,
        // as the stable sort of `Decider` leaves them). Only as many are taken off the heap as
        // the addresses need: a group can be hundreds of sites, an answer a few.
        var ranked: [Double] = []
        var groupCount = 0
        if let first = candidates.first, !first.saturated {
            groupCount = candidates.prefix { !$0.saturated && $0.score - first.score <= near }.count
            if groupCount > 1 {
                let key = Decider.rendezvousKey(context.description + "/" + model.name)
                ranked = candidates[0..<groupCount].map {
                    Decider.rendezvous(keyHash: key, id: index.ids[Int($0.site)], weight: index.weights[Int($0.site)])
                }
            } else {
                groupCount = 0
            }
        }
        var heap = Array(0..<groupCount)
        func before(_ a: Int, _ b: Int) -> Bool { ranked[a] > ranked[b] || (ranked[a] == ranked[b] && a < b) }
        func sink(_ start: Int) {
            var parent = start
            while true {
                let left = 2 * parent + 1
                guard left < heap.count else { return }
                var child = left
                if left + 1 < heap.count && before(heap[left + 1], heap[left]) { child = left + 1 }
                guard before(heap[child], heap[parent]) else { return }
                heap.swapAt(child, parent)
                parent = child
            }
        }
        for position in stride(from: heap.count / 2 - 1, through: 0, by: -1) { sink(position) }
        var rest = groupCount
        func next() -> Candidate? {
            if !heap.isEmpty {
                let top = heap[0]
                heap[0] = heap[heap.count - 1]
                heap.removeLast()
                sink(0)
                return candidates[top]
            }
            guard rest < candidates.count else { return nil }
            rest += 1
            return candidates[rest - 1]
        }
        var answer = SteeringAnswer(ipv4: [], ipv6: [], ttl: model.ttl, denied: false, denial: .empty, sites: [])
        var chosen: [Int32] = []
        var worst = -Double.infinity
        while let candidate = next() {
            var used = false
            for address in index.ipv4[Int(candidate.site)] where answer.ipv4.count < wanted {
                answer.ipv4.append(address)
                used = true
            }
            for address in index.ipv6[Int(candidate.site)] where answer.ipv6.count < wanted {
                answer.ipv6.append(address)
                used = true
            }
            if used {
                chosen.append(candidate.site)
                answer.sites.append(index.ids[Int(candidate.site)])
                worst = max(worst, candidate.score)
            }
            if answer.ipv4.count >= wanted && answer.ipv6.count >= wanted { break }
        }
        if chosen.isEmpty { worst = .infinity }
        if unsettled(chosen, worst) { answer.ttl = min(answer.ttl, policy.health.unsettledTTL) }
        if chosen.isEmpty {
            keys = candidates.map(\.site)
        } else {
            keys = chosen
            if let best, !chosen.contains(best) { keys.append(best) }
        }
        if chosen.isEmpty {
            answer.denied = true
            answer.denial = policy.denial.mode
            answer.ttl = policy.denial.ttl
            if policy.denial.mode == .endpoint, let endpoint = context.endpoint {
                answer.ipv4 = endpoint.ipv4
                answer.ipv6 = endpoint.ipv6
            }
        }
        return answer
    }
}
