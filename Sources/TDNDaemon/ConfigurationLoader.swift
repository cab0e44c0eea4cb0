import ConfigFile
import GeoPolicy
import HealthProbe
import TDNDNS

#if canImport(Glibc)
import Glibc
#endif

/// Everything a snapshot is compiled from: zones, then the steering policy and geo database
/// when configured. Used alike by `serve`, `check`, `explain` and every reload, so a file that
/// `check` accepts is exactly one that `serve` can load.
struct ConfigurationLoader: Sendable {
    let config: DaemonConfig

    /// Live health of the probed sites (the daemon's probes); nil: every site healthy.
    var health: (@Sendable ([ProbeTarget]) -> HealthView)? = nil

    /// The parts of one load, for tools that want more than the snapshot.
    struct Loaded: Sendable {
        var set: ZoneSet
        var policy: Policy?
        var geo: GeoDatabase?
        var zones: [Zone]
        /// The policy's probed sites and how (HealthProbe read each site's settings).
        var probes: [ProbeTarget] = []
        /// The steering control plane of this configuration, kept across health changes (and
        /// across zone reloads that leave the policy and the geo database alone).
        var steering: Steering?
        /// The health the snapshot was compiled with.
        var health: HealthView

        /// The same configuration under new health: only the pairs whose answer can change are
        /// decided again, and only the steering part of the snapshot is rebuilt (the zone part,
        /// files and the geo database are not touched).
        func recompiled(health: HealthView) -> Loaded {
            guard let steering else { return self }
            var copy = self
            let summary = steering.update(health: health)
            let data = SteeringBuilder.build(
                steering.table(), zone: set.snapshot.zoneData, previous: set.snapshot.steeringData)
            copy.set = ZoneSet(
                snapshot: set.snapshot.replacingSteering(data),
                fingerprint: set.fingerprint, summary: summary)
            copy.health = health
            return copy
        }
    }

    /// A policy compiled against a geography: the decisions (`SteeringCompiler`), the location
    /// tries (built once), and the steered names. Moves forward with each health change; used
    /// by one thread at a time (loads and rebuilds run under the snapshot lock).
    final class Steering: @unchecked Sendable {
        let compiler: SteeringCompiler
        let locations: LocationTrie
        let names: [DomainName]
        /// The geo database file as loaded (size, modification time, inode), to tell whether a
        /// reload may keep these decisions.
        let geoStamp: [Int]
        let geoPath: String?
        private(set) var lastRecomputed = 0

        /// Answer-share budgets (`Budgets.swift`): each pair's answer, what the last pass
        /// saw, and the allowed sites of each (name, location class).
        struct PairKey: Hashable, Sendable {
            var name: Int
            var location: Int
            var shard: Int
        }
        var budgetChoices: [PairKey: BudgetChoice] = [:]
        var budgetFigures = BudgetFigures()
        /// Per site index: when its assignment changed, its capacity estimate then, and how long
        /// resolvers may hold the answers it had (the longest TTL).
        var budgetSettling: [Int: (since: Double, capacity: Double, ttl: Double)] = [:]
        var candidateCache: [Int: [(site: Int, score: Double)]] = [:]
        lazy var siteIndexOf = Dictionary(
            uniqueKeysWithValues: compiler.policy.sites.enumerated().map { ($1.id, $0) })
        lazy var referenceDecider = Decider(policy: compiler.policy)
        /// The demand the data plane counted under this configuration's steering parts.
        lazy var demand = DemandEstimate(geography: compiler.geography)

        convenience init(policy: Policy, geo: GeoDatabase?, health: HealthView) {
            self.init(
                policy: policy, geography: SteeringPlanner.geography(policy: policy, geo: geo), health: health,
                geoPath: geo?.path)
        }

        /// With the location tries left empty when `tries` is false (the simulator answers
        /// from the decisions, not from a snapshot).
        init(policy: Policy, geography: SteeringGeography, health: HealthView, geoPath: String?, tries: Bool = true) {
            compiler = SteeringCompiler(policy: policy, geography: geography, health: health)
            locations = tries ? LocationTrie(v4: geography.v4, v6: geography.v6) : .empty
            let plan = compiler.plan()
            names = plan.names.compactMap { try? DomainName($0.labels.joined(separator: ".") + "." + plan.zone) }
            self.geoPath = geoPath
            geoStamp = geoPath.map { Steering.stamp($0) } ?? []
            lastRecomputed = compiler.nameCount * geography.locations.count
        }

        static func stamp(_ path: String) -> [Int] {
            var info = stat()
            guard stat(path, &info) == 0 else { return [] }
            return [Int(info.st_size), Int(info.st_mtim.tv_sec), Int(info.st_mtim.tv_nsec), Int(info.st_ino)]
        }

        /// Whether a new load of `policy` and `geo` may keep these decisions.
        func fits(policy: Policy, geo: GeoDatabase?) -> Bool {
            policy == compiler.policy && geo?.path == geoPath && (geo.map { Steering.stamp($0.path) } ?? []) == geoStamp
        }

        /// Moves to `health`; returns the load summary. A budget choice that names a site now
        /// down (or without the model) is dropped at once; the next pass places its pair again.
        /// The others stay: a site turning full keeps its pairs until the next pass sheds what
        /// takes it down to its low-water mark (the full flag alone would move them all).
        func update(health: HealthView) -> String {
            lastRecomputed = compiler.update(health: health)
            let plan = compiler.plan()
            func usable(_ site: String, _ key: PairKey) -> Bool {
                health[site].up && (health[site].models?.contains(plan.names[key.name].labels[0]) ?? true)
            }
            budgetChoices = budgetChoices.filter { key, choice in choice.sites.allSatisfy { usable($0, key) } }
            return summary
        }

        var summary: String {
            let plan = compiler.plan()
            return
                "\(plan.names.count) steered names, \(plan.locations.count) location classes, \(plan.answers.count) distinct answers"
        }

        /// The current decisions in the form TDNDNS takes.
        func table() -> SteeringTable {
            let plan = compiler.plan()
            var table = SteeringTable()
            table.locations = locations
            table.classCount = plan.locations.count
            for (name, entry) in zip(names, plan.names) { table.names.append((name, entry.answerOfClass)) }
            table.answerKeys = plan.answerKeys
            table.answerKeyEpoch = plan.answerKeyEpoch
            table.answers = plan.answers.map { answer in
                switch (answer.denied, answer.denial) {
                case (true, .servfail): return SteeringTable.Answer(kind: .serverFailure, ttl: answer.ttl)
                case (true, .empty): return SteeringTable.Answer(kind: .denied, ttl: answer.ttl)
                default:
                    return SteeringTable.Answer(
                        kind: .addresses, ipv4: answer.ipv4, ipv6: answer.ipv6, ttl: answer.ttl, sites: answer.sites)
                }
            }
            if !budgetChoices.isEmpty {
                let policy = compiler.policy
                let budget = budgetAnswers(first: table.answers.count) { name in
                    policy.models.first { $0.name == plan.names[name].labels[0] }?.answers ?? 1
                }
                table.answers += budget.answers
                // Budget answers have no key: they are encoded afresh each time.
                table.answerKeys += repeatElement(-1, count: budget.answers.count)
                table.shardAnswers = budget.shards
            }
            return table
        }
    }

    func load(previous: [Zone]? = nil) -> Result<ZoneSet, ConfigErrors> { loadAll(previous: previous).map(\.set) }

    /// A pure function of the files and its arguments. With `previous` (the zones a watcher's
    /// reload would replace), a zone whose content changed without a serial increase is an
    /// error (`Zone.unchangedSerials`). With `serving` (what is served now), a policy and geo
    /// database that did not change keep its decisions.
    func loadAll(previous: [Zone]? = nil, serving: Loaded? = nil) -> Result<Loaded, ConfigErrors> {
        var errors: [ConfigError] = []
        func add(_ failure: ConfigErrors) { errors += failure.errors }
        var zones: [Zone] = []
        switch ZoneCompiler.load(directory: config.zones) {
        case .success(let loaded):
            zones = loaded
            if let previous { errors += Zone.unchangedSerials(previous: previous, next: zones) }
        case .failure(let failure): errors += failure.errors
        }
        var policy: Policy? = nil
        var probes: [ProbeTarget] = []
        if let path = config.policy {
            let loaded = PolicyLoader.load(path: path) { site, reader in
                let settings = ProbePlan.settings(of: site, &reader)
                if settings.isConfigured { probes.append(settings.target(site: site.id)) }
            }
            switch loaded {
            case .success(let loaded): policy = loaded
            case .failure(let failure): add(failure)
            }
        }
        var geo: GeoDatabase? = nil
        if let path = config.geoip {
            if access(path, F_OK) != 0 {
                errors.append(
                    ConfigError(
                        file: path, line: 0, message: "geo database not found (the demo's is built by `make geoip`)"))
            } else {
                do { geo = try GeoDatabase(path: path) } catch { add(error) }
            }
        }
        guard errors.isEmpty else { return .failure(ConfigErrors(errors)) }

        var watched = zones.flatMap(\.files)
        var steering: Steering? = nil
        var healthView = HealthView()
        var summary = ""
        if let policy {
            watched.append(policy.file)
            if let geo { watched.append(geo.path) }
            guard zones.contains(where: { $0.origin.description.lowercased() == policy.zone.lowercased() }) else {
                return .failure(
                    ConfigErrors([
                        ConfigError(
                            file: policy.file, line: 1,
                            message:
                                "zone: \(policy.zone) is not served (no \(policy.zone.dropLast()).zone in \(config.zones))"
                        )
                    ]))
            }
            healthView = health?(probes) ?? HealthView()
            // A reload that leaves the policy and the geo database alone keeps the decisions
            // (and moves them to the current health): only the zones are compiled again.
            if let kept = serving?.steering, kept.fits(policy: policy, geo: geo) {
                steering = kept
                summary = kept.update(health: healthView)
            } else {
                let made = Steering(policy: policy, geo: geo, health: healthView)
                steering = made
                summary = made.summary
            }
            let conflicts = SnapshotBuilder.conflicts(zones, steeredNames: steering!.names)
            guard conflicts.isEmpty else {
                return .failure(
                    ConfigErrors(
                        conflicts.map { ConfigError(file: policy.file, line: 0, message: "model hostname \($0)") }))
            }
        }
        let zoneData = SnapshotBuilder.zoneData(zones, steeredNames: steering?.names ?? [])
        let set = ZoneSet(
            snapshot: Snapshot(
                zone: zoneData, steering: SteeringBuilder.build(steering?.table() ?? SteeringTable(), zone: zoneData)),
            fingerprint: ZoneSet.Fingerprint(directory: config.zones, extraFiles: watched), summary: summary)
        return .success(
            Loaded(
                set: set, policy: policy, geo: geo, zones: zones, probes: probes, steering: steering,
                health: healthView))
    }
}
